//! The min-max kernel (being written).
