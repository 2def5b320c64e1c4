"""The held-out gain verdict printed at the end of a run."""


def test_gain_verdict_names_significant_gains_and_losses() -> None:
    """A gain beyond two standard errors either way is significant; a loss is called a loss."""
    from preftune.evaluation.statistical import gain_verdict

    before = {"margin": {"mean": 0.0, "stderr": 0.0, "count": 8}}

    def after(mean: float) -> dict:
        return {"margin": {"mean": mean, "stderr": 0.5, "count": 8}}

    assert gain_verdict("margin", before, after(1.5)).endswith("+1.5000 = 3.0 s.e.: significant (> 2 s.e.)")
    assert gain_verdict("margin", before, after(-1.265)).endswith("= -2.5 s.e.: significant LOSS (< -2 s.e.)")
    assert gain_verdict("margin", before, after(0.5)).endswith("NOT significant (within 2 s.e.)")
    assert gain_verdict("accuracy", before, after(1.0)) is None
