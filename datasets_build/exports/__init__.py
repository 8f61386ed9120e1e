"""Exporters of a build into the layouts of other projects (FineHumanML3D texts, ReMoDiffuse's database)."""
