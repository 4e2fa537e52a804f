//! The autoscaling signal of an upstream: how many backends its load asks for. Read by the
//! autoscale hook ([`super::autoscale`]), the admin API (`GET /v1/upstreams/{u}/scale`) and
//! the `tideway_upstream_recommended_backends` gauge, so all three say the same.
//!
//! Imports: `pool`, `discovery::fleet`.

use crate::discovery::fleet::{Fleet, InstanceCount};
use crate::pool::Upstream;
use serde::Serialize;

/// The autoscaling signal of an upstream (`GET /v1/upstreams/{u}/scale`).
#[derive(Serialize, Debug, PartialEq, utoipa::ToSchema)]
pub struct ScaleView {
    pub backends: usize,
    pub healthy: usize,
    /// This instance's, or with etcd the whole fleet's.
    pub active_connections: u64,
    pub target_per_backend: Option<u32>,
    pub recommended_backends: usize,
    /// With etcd: every instance's share of `active_connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceCount>>,
}

impl ScaleView {
    /// The signal for `u`: this instance's counts, or the fleet's when `fleet` is given.
    pub fn of(u: &Upstream, fleet: Option<&Fleet>) -> Self {
        match fleet {
            None => Self::with_active(u, u.backends.iter().map(|b| b.live.active()).sum(), None),
            Some(f) => {
                let instances = f.upstream_counts(&u.name);
                let active = instances.iter().map(|i| i.active_connections).sum();
                Self::with_active(u, active, Some(instances))
            }
        }
    }

    /// Recommended = ceil(active / target), clamped to [min, max]; without a `scale` section,
    /// the current number of backends.
    fn with_active(u: &Upstream, active: u64, instances: Option<Vec<InstanceCount>>) -> Self {
        let healthy = u.backends.iter().filter(|b| b.healthy).count();
        let recommended = match &u.policy.scale {
            Some(s) => {
                let want = active.div_ceil(u64::from(s.target_per_backend)) as usize;
                want.clamp(s.min as usize, s.max as usize)
            }
            None => u.backends.len(),
        };
        ScaleView {
            backends: u.backends.len(),
            healthy,
            active_connections: active,
            target_per_backend: u.policy.scale.as_ref().map(|s| s.target_per_backend),
            recommended_backends: recommended,
            instances,
        }
    }
}
