//! TODO(skeleton): filled in by the edge/compute work.

use super::AwsProvider;
use crate::provider::{Observed, Progress, ProviderError, Resolved, Scope};

pub async fn observe(_p: &AwsProvider, _scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
    Ok(Vec::new())
}

pub async fn create(
    _p: &AwsProvider,
    _scope: &Scope,
    res: &Resolved,
    _progress: &dyn Progress,
) -> Result<Observed, ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", res.kind)))
}

pub async fn update(
    _p: &AwsProvider,
    _scope: &Scope,
    res: &Resolved,
    _current: &Observed,
    _progress: &dyn Progress,
) -> Result<Observed, ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", res.kind)))
}

pub async fn delete(_p: &AwsProvider, current: &Observed, _progress: &dyn Progress) -> Result<(), ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", current.kind)))
}
