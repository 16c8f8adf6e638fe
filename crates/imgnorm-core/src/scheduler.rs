//! The lease scheduler: a pure state machine (filled in by the scheduler work).
