"""Layers used by two or more model packages (MODELS.md names them per model): MotionDiffuse's blocks
(linear attention, stylization, the text head), shared by MotionDiffuse, FineMotionDiffuse and ReMoDiffuse;
the vector quantizers of the motion tokenizers; BERT's weight initialisation."""
