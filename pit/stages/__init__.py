"""Stage bodies, one module per family: `supervised` (tokenizer, SFT, R_P, R_PIT), `ppo` (RLHF of M_P, the control,
M_PIT's curriculum rounds), `evaluate` (judge, evaluation). Each is `body(ctx, out, metrics, **args)` of a
`context.StageContext`; `pit.pipeline`'s table says when each runs and what its key holds."""
