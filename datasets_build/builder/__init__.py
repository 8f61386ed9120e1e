"""Plan, fingerprint, the chunk task, dataset steps, publishing and the card: one build of a recipe."""
