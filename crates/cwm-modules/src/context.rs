//! Resources shared by every sink of a process (one HTTP client, one stdout writer, ...).

use std::path::PathBuf;

/// Shared resources handed to sink factories.
#[derive(Clone)]
pub struct ModuleContext {
    /// Default jail root of `save_to_disk` (the working directory).
    pub base_dir: PathBuf,
}

impl ModuleContext {
    pub fn new() -> Self {
        Self {
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

impl Default for ModuleContext {
    fn default() -> Self {
        Self::new()
    }
}
