"""The domain of motions: dataset specs, kinematics, caption lines, normalisation."""
