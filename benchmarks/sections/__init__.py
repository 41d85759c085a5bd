"""One module per benchmark section; each has a run(ctx) -> Section."""
