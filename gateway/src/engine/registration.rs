//! REGISTER handling: digest challenge, verification, binding update, persistence.

use super::shard::{ShardNotice, ShardOutput};
use super::{Engine, Now};
use crate::auth::guard::Failure;
use crate::auth::{AuthOutcome, RejectReason};
use crate::config::DigestAlgorithm;
use crate::registrar::RegisterError;
use crate::sip::ids;
use crate::sip::message::{starts_with_ignore_case, SipMessage};
use crate::sip::transaction::ServerTxId;
use crate::store::StoreCommand;
use crate::transport::{Peer, Protocol};
use ezk_sip_types::Name;

/// Which digest header pair a challenge uses.
#[derive(Clone, Copy)]
pub(super) enum ChallengeKind {
    /// Registrar: 401 + WWW-Authenticate / Authorization.
    Registrar,
    /// Proxy-like (INVITE): 407 + Proxy-Authenticate / Proxy-Authorization.
    Proxy,
}

impl ChallengeKind {
    fn credentials(self) -> Name {
        match self {
            ChallengeKind::Registrar => Name::AUTHORIZATION,
            ChallengeKind::Proxy => Name::PROXY_AUTHORIZATION,
        }
    }
}

impl Engine {
    /// Authenticates a request from `peer`. Returns the authenticated user, or None after
    /// answering the request itself: a challenge (401/407) when it has no usable
    /// credentials, 403 (or 400) when they are refused.
    ///
    /// Those answers are stateless (sent once, no transaction kept), so unauthenticated
    /// requests cost no memory and get exactly one response each. Unknown users and wrong
    /// passwords get the same 403, and the first challenge does not depend on whether the
    /// user exists beyond its configured algorithm list, so responses do not reveal which
    /// extensions exist. Every refusal counts against the source and the extension (see
    /// [`crate::auth::guard`]).
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: &SipMessage,
        (claimed_user, peer): (Option<&str>, Peer),
        kind: ChallengeKind,
    ) -> Option<String> {
        let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
        let algorithms = self.config.algorithms_for(claimed_user).to_vec();
        // Not header_list: a credentials value is itself a comma-separated parameter list.
        let credentials = msg
            .raw_values(&kind.credentials())
            .map(|value| value.as_str())
            .find(|value| starts_with_ignore_case(value, "digest "));
        let request_uri = &msg.request_line()?.uri;
        let Some(value) = credentials else {
            self.challenge(now, tx, msg, &algorithms, kind, false);
            return None;
        };
        let config = &self.config;
        let outcome = self.auth.verify(
            now.mono,
            (&method, request_uri),
            value,
            &algorithms,
            |user| config.extension(user).and_then(|e| e.password.clone()),
        );
        let (reason, username) = match outcome {
            AuthOutcome::Authenticated { user } if !self.locked_out(now, &user, peer) => {
                return Some(user);
            }
            AuthOutcome::Authenticated { user } => (RejectReason::Locked, Some(user)),
            AuthOutcome::Rejected { reason, username } => (reason, username),
            AuthOutcome::Stale => {
                self.challenge(now, tx, msg, &algorithms, kind, true);
                return None;
            }
        };
        let user = username.as_deref().or(claimed_user);
        self.refuse(now, tx, msg, peer, user, &reason);
        None
    }

    /// Answers a request without usable credentials with a challenge, statelessly.
    fn challenge(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: &SipMessage,
        algorithms: &[DigestAlgorithm],
        kind: ChallengeKind,
        stale: bool,
    ) {
        let Some(peer) = self.tx.peer(tx) else {
            return;
        };
        if peer.protocol != Protocol::Internal
            && !self.guard.lock().allows_challenge(now.mono, peer.addr.ip())
        {
            self.tx.forget_server(tx);
            return;
        }
        let (code, reason, header) = match kind {
            ChallengeKind::Registrar => (401, "Unauthorized", Name::WWW_AUTHENTICATE),
            ChallengeKind::Proxy => (
                407,
                "Proxy Authentication Required",
                Name::PROXY_AUTHENTICATE,
            ),
        };
        let mut response = msg.response(code, reason, Some(&ids::tag()));
        // One challenge per algorithm, in order of preference, but never a response
        // larger than the request beyond the first (no amplification). The sizes are
        // only measured when there is more than one.
        let mut challenges = self.auth.challenge(now.mono, algorithms, stale).into_iter();
        if let Some(first) = challenges.next() {
            response.add_header(header.clone(), first);
        }
        if challenges.len() > 0 {
            let request_size = msg.to_bytes().len();
            let mut size = response.to_bytes().len();
            for challenge in challenges {
                // `Name: value\r\n`
                size += header.as_print_str().len() + 2 + challenge.len() + 2;
                if size > request_size {
                    break;
                }
                response.add_header(header.clone(), challenge);
            }
        }
        self.tx.respond_statelessly(tx, response);
    }

    /// True when `user` is locked (too many failures against it) and `peer` may not
    /// authenticate as it anyway: only trusted networks and the addresses it is
    /// registered from may.
    fn locked_out(&self, now: Now, user: &str, peer: Peer) -> bool {
        let locked = {
            let guard = self.guard.lock();
            guard.is_locked(now.mono, user) && !guard.is_trusted(peer.addr.ip())
        };
        locked
            && !self
                .registrar
                .lookup(now.unix(), user)
                .iter()
                .any(|binding| binding.source.addr.ip() == peer.addr.ip())
    }

    /// Refuses a request's credentials: counts the failure (which may block the source
    /// or lock the extension) and answers once, statelessly.
    fn refuse(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: &SipMessage,
        peer: Peer,
        user: Option<&str>,
        reason: &RejectReason,
    ) {
        let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
        let known_extension = user.is_some_and(|u| self.config.extension(u).is_some());
        self.guard.lock().record_failure(
            now.mono,
            Failure {
                source: peer.addr,
                method: &method,
                user,
                known_extension,
                reason,
            },
        );
        let (code, phrase) = reason.status();
        let response = msg.response(code, phrase, Some(&ids::tag()));
        self.tx.respond_statelessly(tx, response);
    }

    pub(super) fn on_register(&mut self, now: Now, tx: ServerTxId, msg: SipMessage, peer: Peer) {
        // The address-of-record in To must be a SIP or SIPS URI (RFC 3261 §10.2); RFC 4475
        // §3.3.4 (unksm2: `To: isbn:2983792873`) has a registrar answer 400 for anything else.
        let Some(to) = msg.to_header().filter(|to| to.sip_uri().is_some()) else {
            self.reply(now, tx, 400, "Bad Request (To is not a SIP or SIPS URI)");
            return;
        };
        let Some(aor) = to.user() else {
            self.reply(now, tx, 400, "Bad Request (To has no user part)");
            return;
        };
        let Some(user) =
            self.authenticate(now, tx, &msg, (Some(&aor), peer), ChallengeKind::Registrar)
        else {
            return;
        };
        if user != aor {
            tracing::info!("user {user} tried to register {aor}");
            self.reply(now, tx, 403, "Forbidden");
            return;
        }
        match self.registrar.register(now.unix(), &aor, &msg, peer) {
            Ok(outcome) => {
                let mut response = msg.response(200, "OK", Some(&ids::tag()));
                for (contact, expires) in &outcome.contacts {
                    response.add_header(Name::CONTACT, format!("<{contact}>;expires={expires}"));
                }
                self.tx.send_response(now.mono, tx, response);
                if outcome.changed {
                    tracing::info!("{aor} now has {} contact(s)", outcome.contacts.len());
                    self.persist_bindings(now, &aor);
                    self.tell_shards_bindings(&aor);
                }
            }
            Err(error) => {
                let (code, reason) = error.status();
                let mut response = msg.response(code, reason, Some(&ids::tag()));
                if let RegisterError::IntervalTooBrief { min } = error {
                    response.set_header(Name::MIN_EXPIRES, min.to_string());
                }
                self.tx.send_response(now.mono, tx, response);
            }
        }
    }

    /// Every shard drops the bindings whose time is up; the first one says so and writes
    /// it to the store (once).
    pub(super) fn expire_registrations(&mut self, now: Now) {
        for aor in self.registrar.expire(now.unix()) {
            if self.shard.is_first() {
                tracing::info!("registration of {aor} expired");
                self.persist_bindings(now, &aor);
            }
        }
    }

    /// The other shards learn `aor`'s bindings as they are now.
    fn tell_shards_bindings(&mut self, aor: &str) {
        if self.shard.count() > 1 {
            self.shard_outputs
                .push_back(ShardOutput::Notice(ShardNotice::Bindings {
                    aor: aor.to_string(),
                    bindings: self.registrar.shared(aor),
                }));
        }
    }

    pub(super) fn persist_bindings(&mut self, now: Now, aor: &str) {
        self.store_commands
            .push_back(StoreCommand::ReplaceBindings {
                node: self.config.node.id.clone(),
                aor: aor.to_string(),
                bindings: self.registrar.lookup(now.unix(), aor),
            });
    }
}
