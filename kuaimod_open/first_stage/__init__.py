"""Stage 3, first stage: the cheap text router and the cascade that sends only unclear cases to the VLM."""
