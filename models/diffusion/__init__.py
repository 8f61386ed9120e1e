"""Diffusion schedules and samplers with no weights (shared by the diffusion generators).

`schedule.py`: the linear beta schedule, timestep respacing (`space_timesteps(1000, "15,15,8,6,6")`),
`GaussianDiffusion` (q_sample, epsilon / x0 parameterisations, fixed-small / fixed-large variances,
one ancestral DDPM step, one DDIM step with eta) and `sample_loop` ("predict, then step") with a
guidance hook (`classifier_free`, `mix`: classifier-free guidance and condition mixtures).
The network always receives the ORIGINAL timestep indices, also on a respaced chain.
"""
