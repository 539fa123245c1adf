"""Stage 4, evaluation: official KuaiMod metrics, reports and plots, policy-diff replays."""
