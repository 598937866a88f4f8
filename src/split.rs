//! Patient-grouped splits.
