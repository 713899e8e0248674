"""Evidence: compact run summaries and the tables generated from them into docs/."""
