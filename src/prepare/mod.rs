//! The prepare pipeline.
