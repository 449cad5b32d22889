"""What each kopf handler does; ``trackrelay_operator.main`` registers them and delegates here."""
