//! The UI, one module per feature.

pub mod backend_check;
