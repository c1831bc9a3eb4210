"""Looking after a store that keeps serving, one module per capability: `verify`,
`rebuild` (with `partition`, its fold across worker processes), `recover`, `prune`
(and the transcript export before it) and `bindings` (the bindings check). Each works
on a `Store` (infrastructure.store), as the Python API does.

Every repair is an event in the log (so replay = live still holds); the read models are
only ever written by the fold. Rebuild and verify fold the log into the `*_shadow`
tables (`shadow`) page by page, each page its own short transaction, so memory stays
bounded and writers keep going in between.
"""
