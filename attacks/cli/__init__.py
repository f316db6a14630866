"""The attack command-line programs (`generate_adversarial`, `evaluate_adversarial`)."""
