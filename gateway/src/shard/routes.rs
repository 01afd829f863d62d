//! Call-IDs routed to a shard other than the one they hash to: a picker's Call-ID after
//! its pickup was handed to the call's shard ([`crate::engine::handover`]). Read for
//! every datagram, so reading costs one atomic load while no route is set (the common
//! case) and a short lock while some are (pickups in progress); written a few times per
//! pickup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The routes, shared by every shard and the threads that feed them.
#[derive(Clone, Default)]
pub struct CallRoutes {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// How many routes are set (read without the lock).
    count: AtomicUsize,
    routes: Mutex<HashMap<String, usize>>,
}

impl CallRoutes {
    /// The shard `call_id` is routed to, if a route is set.
    pub fn route(&self, call_id: &str) -> Option<usize> {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock().get(call_id).copied()
    }

    /// Routes `call_id` to `shard` (None: back to the shard it hashes to).
    pub fn set(&self, call_id: String, shard: Option<usize>) {
        let mut routes = self.lock();
        match shard {
            Some(shard) => {
                routes.insert(call_id, shard);
            }
            None => {
                routes.remove(&call_id);
            }
        }
        self.inner.count.store(routes.len(), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_holds_until_taken_back() {
        let routes = CallRoutes::default();
        assert_eq!(routes.route("c1"), None);
        routes.set("c1".into(), Some(1));
        assert_eq!(routes.route("c1"), Some(1));
        assert_eq!(routes.clone().route("c2"), None);
        routes.set("c1".into(), None);
        assert_eq!(routes.route("c1"), None);
    }
}
