//! Registrar (RFC 3261 §10.3): bindings of contacts to extensions, with expiry. Sans-IO:
//! the caller passes the Unix time, so expiry survives restarts through the store.

use crate::config::RegistrarConfig;
use crate::sip::message::SipMessage;
use crate::sip::target::UriTarget;
use crate::transport::Peer;
use ezk_sip_types::Name;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// One registered contact of an extension.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI.
    pub contact: String,
    /// Unix time at which the binding expires.
    pub expires_at: u64,
    /// Call-ID of the REGISTER that made it (RFC 3261 §10.3 step 7 ordering).
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Where the REGISTER came from: requests for this contact go there (NAT-friendly).
    pub source: Peer,
    /// Preference (`q` parameter).
    pub q: Option<f32>,
    /// The phone's User-Agent (at most [`USER_AGENT_LIMIT`] characters, printable ASCII),
    /// for the operator's status view.
    pub user_agent: Option<String>,
}

/// The most of a User-Agent a binding keeps: it comes from the network.
pub const USER_AGENT_LIMIT: usize = 100;

/// The User-Agent a binding keeps of a REGISTER: printable ASCII only, at most
/// [`USER_AGENT_LIMIT`] characters.
fn user_agent_of(msg: &SipMessage) -> Option<String> {
    let kept: String = msg
        .header(&Name::USER_AGENT)?
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(USER_AGENT_LIMIT)
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Why a REGISTER was refused; each maps to a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// An expiry below the configured minimum: 423 with Min-Expires.
    #[error("registration interval too brief (minimum {min} s)")]
    IntervalTooBrief {
        /// The shortest interval accepted.
        min: u32,
    },
    /// Malformed Contact/Expires, or `*` misused: 400.
    #[error("invalid REGISTER: {0}")]
    InvalidRequest(String),
    /// Same Call-ID with a CSeq not above the stored one: 500 (RFC 3261 §10.3 step 7).
    #[error("REGISTER out of order (CSeq not increasing for this Call-ID)")]
    OutOfOrder,
    /// More contacts than `registrar.max_contacts`: 403.
    #[error("too many contacts for this extension")]
    TooManyContacts,
    /// A Contact names the gateway's own SIP address: calls to it would come back to the
    /// gateway (a loop), so it is refused with 403.
    #[error("contact {0} is the gateway's own address")]
    OwnAddress(String),
}

impl RegisterError {
    /// Status code and reason phrase of the response.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RegisterError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            RegisterError::InvalidRequest(_) => (400, "Bad Request"),
            RegisterError::OutOfOrder => (500, "Server Internal Error (REGISTER out of order)"),
            RegisterError::TooManyContacts => (403, "Forbidden (too many contacts)"),
            RegisterError::OwnAddress(_) => {
                (403, "Forbidden (Contact is the gateway's own address)")
            }
        }
    }
}

/// What a successful REGISTER leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// Every current binding with its remaining seconds, for the 200 OK's Contact headers.
    pub contacts: Vec<(String, u32)>,
    /// Whether anything changed (and must be persisted).
    pub changed: bool,
}

/// A connection's remote address gained its first binding or lost its last one.
///
/// Only connection-oriented sources (TCP) are reported: the TCP transport keeps the idle
/// connections of registered phones open and closes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceChange {
    /// The source of the REGISTERs (the connection's remote address).
    pub peer: Peer,
    /// True when it now holds a binding, false when it holds none any more.
    pub registered: bool,
}

/// The registrations restored from the store, built once and handed to every engine
/// shard: the shards share each extension's list (cloning this copies pointers, not
/// bindings).
#[derive(Debug, Clone, Default)]
pub struct RestoredBindings(HashMap<String, Arc<Vec<Binding>>>);

impl RestoredBindings {
    /// The bindings the store held, by extension.
    pub fn new(restored: Vec<(String, Binding)>) -> RestoredBindings {
        let mut lists: HashMap<String, Vec<Binding>> = HashMap::new();
        for (aor, binding) in restored {
            lists.entry(aor).or_default().push(binding);
        }
        RestoredBindings(
            lists
                .into_iter()
                .map(|(aor, list)| (aor, Arc::new(list)))
                .collect(),
        )
    }
}

/// Bindings of every extension.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    /// The gateway's SIP address: no contact may name it.
    own: SocketAddr,
    /// Each extension's list, shared with the other engine shards until one of them
    /// changes it (copy on write: [`Arc::make_mut`]), so every shard holds every
    /// registration without a copy of each.
    bindings: HashMap<String, Arc<Vec<Binding>>>,
    /// How many bindings each TCP or TLS source holds (an entry only while above zero).
    sources: HashMap<Peer, usize>,
    /// Source changes not yet taken by [`Registrar::poll_source_change`].
    source_changes: VecDeque<SourceChange>,
}

/// Whether a binding's source is a connection whose life depends on the registration.
fn tracked(peer: &Peer) -> bool {
    peer.protocol.is_stream()
}

/// A requested change, validated before any is applied.
struct Update {
    contact: String,
    expires: u32,
    q: Option<f32>,
}

/// True when `contact` names `own` (the gateway's SIP listen address): its IP and port, or,
/// when the gateway listens on every address, a loopback or unspecified IP or `reached`
/// (the address the REGISTER arrived at) with its port; an unspecified IP (`0.0.0.0`,
/// which a send reaches the local host by) with its port always. Host names are not
/// resolved (no DNS), so a name for the gateway is not caught.
fn names_own_address(contact: &str, own: SocketAddr, reached: SocketAddr) -> bool {
    let Some(addr) = UriTarget::parse(contact).map(|target| target.addr()) else {
        return false;
    };
    let ip = addr.ip().to_canonical();
    addr.port() == own.port()
        && (ip == own.ip()
            || ip.is_unspecified()
            || (own.ip().is_unspecified() && (ip.is_loopback() || ip == reached.ip())))
}

impl Registrar {
    /// An empty registrar for a gateway listening on `own`.
    pub fn new(config: RegistrarConfig, own: SocketAddr) -> Self {
        Registrar {
            config,
            own,
            bindings: HashMap::new(),
            sources: HashMap::new(),
            source_changes: VecDeque::new(),
        }
    }

    /// A registrar for a gateway listening on `own`, holding bindings restored from the
    /// store.
    pub fn from_bindings(
        config: RegistrarConfig,
        own: SocketAddr,
        restored: RestoredBindings,
    ) -> Self {
        let mut registrar = Registrar::new(config, own);
        let sources: Vec<Peer> = restored
            .0
            .values()
            .flat_map(|list| list.iter().map(|b| b.source))
            .collect();
        registrar.count_sources(sources, []);
        registrar.bindings = restored.0;
        registrar
    }

    /// Every extension holding at least one binding, sorted.
    pub fn aors(&self) -> Vec<String> {
        let mut aors: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, bindings)| !bindings.is_empty())
            .map(|(aor, _)| aor.clone())
            .collect();
        aors.sort();
        aors
    }

    /// Next change in which TCP sources hold a binding.
    pub fn poll_source_change(&mut self) -> Option<SourceChange> {
        self.source_changes.pop_front()
    }

    /// Updates the per-source binding counts: `added` bindings' sources, then `removed`
    /// ones (in that order, so a source in both is never reported as lost).
    fn count_sources(
        &mut self,
        added: impl IntoIterator<Item = Peer>,
        removed: impl IntoIterator<Item = Peer>,
    ) {
        for peer in added.into_iter().filter(tracked) {
            let count = self.sources.entry(peer).or_default();
            *count += 1;
            if *count == 1 {
                self.source_changes.push_back(SourceChange {
                    peer,
                    registered: true,
                });
            }
        }
        for peer in removed.into_iter().filter(tracked) {
            let Some(count) = self.sources.get_mut(&peer) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.sources.remove(&peer);
                self.source_changes.push_back(SourceChange {
                    peer,
                    registered: false,
                });
            }
        }
    }

    /// The sources of `aor`'s bindings.
    fn sources_of(&self, aor: &str) -> Vec<Peer> {
        self.bindings
            .get(aor)
            .map(|list| list.iter().map(|b| b.source).collect())
            .unwrap_or_default()
    }

    /// Applies an authenticated REGISTER for `aor` received from `source` at Unix time `now`.
    pub fn register(
        &mut self,
        now: u64,
        aor: &str,
        msg: &SipMessage,
        source: Peer,
    ) -> Result<RegisterOutcome, RegisterError> {
        let before = self.sources_of(aor);
        let outcome = self.apply_register(now, aor, msg, source);
        let after = self.sources_of(aor);
        self.count_sources(after, before);
        outcome
    }

    fn apply_register(
        &mut self,
        now: u64,
        aor: &str,
        msg: &SipMessage,
        source: Peer,
    ) -> Result<RegisterOutcome, RegisterError> {
        let contacts = msg
            .contacts()
            .ok_or_else(|| RegisterError::InvalidRequest("malformed Contact".into()))?;
        let header_expires = match msg.header(&Name::EXPIRES) {
            None => None,
            Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
                RegisterError::InvalidRequest(format!("Expires {text:?} is not a number"))
            })?),
        };
        let call_id = msg.call_id().unwrap_or_default().to_string();
        let cseq = msg.cseq().map(|c| c.cseq).unwrap_or(0);
        let user_agent = user_agent_of(msg);
        let current = Arc::make_mut(self.bindings.entry(aor.to_string()).or_default());

        if contacts.iter().any(|c| c.uri == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(RegisterError::InvalidRequest(
                    "Contact: * needs Expires: 0 and no other contact".into(),
                ));
            }
            if current
                .iter()
                .any(|b| b.call_id == call_id && cseq <= b.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
            let changed = !current.is_empty();
            current.clear();
            return Ok(RegisterOutcome {
                contacts: Vec::new(),
                changed,
            });
        }

        let mut updates = Vec::with_capacity(contacts.len());
        for contact in &contacts {
            let expires = match contact.param("expires") {
                Some(text) => text.parse::<u32>().map_err(|_| {
                    RegisterError::InvalidRequest(format!(
                        "contact expires {text:?} is not a number"
                    ))
                })?,
                None => header_expires.unwrap_or(self.config.default_expires_secs),
            };
            if expires != 0 && expires < self.config.min_expires_secs {
                return Err(RegisterError::IntervalTooBrief {
                    min: self.config.min_expires_secs,
                });
            }
            // Removing such a binding (stored before this check existed) stays allowed.
            if expires != 0 && names_own_address(&contact.uri, self.own, source.local) {
                return Err(RegisterError::OwnAddress(contact.uri.clone()));
            }
            let q = contact.param("q").and_then(|q| q.parse::<f32>().ok());
            updates.push(Update {
                contact: contact.uri.clone(),
                expires: expires.min(self.config.max_expires_secs),
                q,
            });
        }
        for update in &updates {
            if current
                .iter()
                .any(|b| b.contact == update.contact && b.call_id == call_id && cseq <= b.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
        }
        current.retain(|b| b.expires_at > now);
        let new_contacts = updates
            .iter()
            .filter(|u| u.expires > 0 && !current.iter().any(|b| b.contact == u.contact))
            .count();
        if current.len() + new_contacts > self.config.max_contacts {
            return Err(RegisterError::TooManyContacts);
        }
        let changed = !updates.is_empty();
        for update in updates {
            current.retain(|b| b.contact != update.contact);
            if update.expires > 0 {
                current.push(Binding {
                    contact: update.contact,
                    expires_at: now + u64::from(update.expires),
                    call_id: call_id.clone(),
                    cseq,
                    source,
                    q: update.q,
                    user_agent: user_agent.clone(),
                });
            }
        }
        let contacts = current
            .iter()
            .map(|b| (b.contact.clone(), remaining(b, now)))
            .collect();
        Ok(RegisterOutcome { contacts, changed })
    }

    /// Unexpired bindings of `aor`, highest `q` first.
    pub fn lookup(&self, now: u64, aor: &str) -> Vec<Binding> {
        let mut found: Vec<Binding> = self
            .bindings
            .get(aor)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| b.q.unwrap_or(1.0).total_cmp(&a.q.unwrap_or(1.0)));
        found
    }

    /// Unexpired bindings at Unix time `now`, and the extensions holding one (counted
    /// in place: the metrics ask often).
    pub fn counts(&self, now: u64) -> (usize, usize) {
        self.bindings
            .values()
            .map(|list| list.iter().filter(|b| b.expires_at > now).count())
            .filter(|&live| live > 0)
            .fold((0, 0), |(contacts, extensions), live| {
                (contacts + live, extensions + 1)
            })
    }

    /// `aor`'s list as held (expired bindings not yet swept included), shared: what
    /// another engine shard is told after a REGISTER changed it.
    pub fn shared(&self, aor: &str) -> Arc<Vec<Binding>> {
        self.bindings.get(aor).cloned().unwrap_or_default()
    }

    /// Holds exactly `bindings` for `aor`: another engine shard handled a REGISTER that
    /// changed them (each shard holds every registration, so a call finds its callee on
    /// the shard its Call-ID chose without asking another; the list is shared, not copied).
    pub fn replace(&mut self, aor: &str, bindings: Arc<Vec<Binding>>) {
        let before = self.sources_of(aor);
        if bindings.is_empty() {
            self.bindings.remove(aor);
        } else {
            self.bindings.insert(aor.to_string(), bindings);
        }
        let after = self.sources_of(aor);
        self.count_sources(after, before);
    }

    /// Removes expired bindings; returns the extensions that lost some.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let mut affected = Vec::new();
        let mut removed = Vec::new();
        for (aor, list) in &mut self.bindings {
            if list.iter().all(|b| b.expires_at > now) {
                continue; // nothing to copy from a list the shards share
            }
            let list = Arc::make_mut(list);
            let before = list.len();
            list.retain(|b| {
                let keep = b.expires_at > now;
                if !keep {
                    removed.push(b.source);
                }
                keep
            });
            if list.len() != before {
                affected.push(aor.clone());
            }
        }
        self.bindings.retain(|_, list| !list.is_empty());
        self.count_sources([], removed);
        affected.sort();
        affected
    }
}

fn remaining(binding: &Binding, now: u64) -> u32 {
    u32::try_from(binding.expires_at.saturating_sub(now)).unwrap_or(u32::MAX)
}
