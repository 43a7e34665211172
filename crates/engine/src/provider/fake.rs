//! An in-memory provider for tests of the engine: records every mutating call and fails or
//! delays the operations it is told to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{Facts, Observed, Progress, Provider, ProviderError, Resolved, Scope, TAG_STACK};
use crate::graph::LogicalId;

#[derive(Default)]
pub struct FakeProvider {
    inner: Mutex<Inner>,
    /// Time each call takes (virtual under `tokio::time::pause`).
    pub delay: Duration,
}

#[derive(Default)]
struct Inner {
    /// (stack, resource), in creation order.
    resources: Vec<(String, Observed)>,
    serial: u64,
    calls: Vec<String>,
    fail: BTreeSet<(String, String)>,
}

impl FakeProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call takes `delay`.
    pub fn with_delay(delay: Duration) -> Self {
        FakeProvider { delay, ..Self::default() }
    }

    /// Makes `op` (`create`, `update`, `delete`) of `id` fail until [`FakeProvider::heal`].
    pub fn fail_on(&self, op: &str, id: &str) {
        self.inner.lock().unwrap().fail.insert((op.into(), id.into()));
    }

    pub fn heal(&self) {
        self.inner.lock().unwrap().fail.clear();
    }

    /// Mutating calls so far, as `op id`, and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().unwrap().calls)
    }

    /// Inserts a resource as an interrupted run might have left it.
    pub fn insert(&self, stack: &str, o: Observed) {
        self.inner.lock().unwrap().resources.push((stack.into(), o));
    }

    pub fn resources(&self, stack: &str) -> Vec<Observed> {
        let inner = self.inner.lock().unwrap();
        inner.resources.iter().filter(|(s, _)| s == stack).map(|(_, o)| o.clone()).collect()
    }

    async fn call(&self, op: &str, id: &LogicalId) -> Result<(), ProviderError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.calls.push(format!("{op} {id}"));
        if inner.fail.contains(&(op.to_string(), id.0.clone())) {
            return Err(ProviderError::new(format!("{op} `{id}`: injected failure")));
        }
        Ok(())
    }

    fn observed(inner: &mut Inner, scope: &Scope, res: &Resolved, physical_id: String) -> Observed {
        let mut depends_on = BTreeSet::new();
        let arns: Vec<(LogicalId, Value)> = inner
            .resources
            .iter()
            .filter(|(s, _)| *s == scope.stack)
            .filter_map(|(_, o)| Some((o.id.clone(), o.outputs.get("arn")?.clone())))
            .collect();
        find_links(&res.props, &arns, &mut depends_on);
        Observed {
            id: res.id.clone(),
            kind: res.kind,
            outputs: BTreeMap::from([
                ("arn".to_string(), Value::from(format!("fake:{}:{physical_id}", scope.stack))),
                ("name".to_string(), Value::from(physical_id.clone())),
            ]),
            physical_id,
            props: res.props.clone(),
            depends_on,
            repair: None,
        }
    }
}

/// Like a real provider reading links from a resource: any property equal to another
/// resource's ARN is a dependency.
fn find_links(v: &Value, arns: &[(LogicalId, Value)], out: &mut BTreeSet<LogicalId>) {
    if let Some((id, _)) = arns.iter().find(|(_, arn)| arn == v) {
        out.insert(id.clone());
    }
    match v {
        Value::Array(items) => items.iter().for_each(|i| find_links(i, arns, out)),
        Value::Object(map) => map.values().for_each(|i| find_links(i, arns, out)),
        _ => {}
    }
}

#[async_trait]
impl Provider for FakeProvider {
    async fn facts(&self, stack: &crate::stack::Stack) -> Result<Facts, ProviderError> {
        let mut facts = Facts::offline(stack);
        facts.region = "us-east-1".into();
        facts.zones = vec!["us-east-1a".into(), "us-east-1b".into(), "us-east-1c".into()];
        Ok(facts)
    }

    async fn observe(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
        Ok(self.resources(&scope.stack))
    }

    async fn create(&self, scope: &Scope, res: &Resolved, _: &dyn Progress) -> Result<Observed, ProviderError> {
        self.call("create", &res.id).await?;
        let mut inner = self.inner.lock().unwrap();
        inner.serial += 1;
        let physical = format!("{}-{}", res.id, inner.serial);
        let o = Self::observed(&mut inner, scope, res, physical);
        debug_assert!(scope.tags_for(&res.id).get(TAG_STACK) == Some(&scope.stack));
        inner.resources.push((scope.stack.clone(), o.clone()));
        Ok(o)
    }

    async fn update(
        &self,
        scope: &Scope,
        res: &Resolved,
        current: &Observed,
        _: &dyn Progress,
    ) -> Result<Observed, ProviderError> {
        self.call("update", &res.id).await?;
        let mut inner = self.inner.lock().unwrap();
        let mut o = Self::observed(&mut inner, scope, res, current.physical_id.clone());
        o.outputs = current.outputs.clone();
        // As a task definition's revision: the update gives it a new ARN.
        if res.kind.outputs_changed_by_update().contains(&"arn") {
            inner.serial += 1;
            o.outputs
                .insert("arn".into(), Value::from(format!("fake:{}:{}:{}", scope.stack, o.physical_id, inner.serial)));
        }
        let slot = inner
            .resources
            .iter_mut()
            .find(|(s, r)| *s == scope.stack && r.physical_id == current.physical_id)
            .ok_or_else(|| ProviderError::new(format!("update `{}`: it does not exist", res.id)))?;
        slot.1 = o.clone();
        Ok(o)
    }

    async fn delete(&self, scope: &Scope, current: &Observed, _: &dyn Progress) -> Result<(), ProviderError> {
        self.call("delete", &current.id).await?;
        let mut inner = self.inner.lock().unwrap();
        inner.resources.retain(|(s, r)| !(*s == scope.stack && r.physical_id == current.physical_id));
        Ok(())
    }
}
