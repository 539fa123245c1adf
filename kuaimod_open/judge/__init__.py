"""Stage 2, judge: the policy, the prompt, the VLM backends, verdict parsing and the judging loop."""
