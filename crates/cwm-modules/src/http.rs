//! STUB: replaced by the sinks work.

use std::sync::Arc;

use cwm_config::WebhookConfig;

use crate::context::ModuleContext;
use crate::sink::Sink;

pub fn factory(_config: &WebhookConfig, _ctx: &ModuleContext) -> Result<Arc<dyn Sink>, String> {
    Err("not implemented".into())
}
