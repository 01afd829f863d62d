//! REGISTER handling: digest challenge, verification, binding update, persistence.

use super::{Engine, Now};
use crate::auth::AuthOutcome;
use crate::registrar::RegisterError;
use crate::sip::ids;
use crate::sip::message::{starts_with_ignore_case, SipMessage};
use crate::sip::transaction::ServerTxId;
use crate::store::StoreCommand;
use crate::transport::Peer;
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
    /// Authenticates a request. Returns the authenticated user, or None after answering
    /// the request with a challenge (401/407) or 403 itself.
    ///
    /// Unknown users and wrong passwords get the same 403, and the first challenge does not
    /// depend on whether the user exists beyond its configured algorithm list, so responses
    /// do not reveal which extensions exist.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        tx: ServerTxId,
        msg: &SipMessage,
        claimed_user: Option<&str>,
        kind: ChallengeKind,
    ) -> Option<String> {
        let method = msg.method().map(|m| m.to_string()).unwrap_or_default();
        let algorithms = self.config.algorithms_for(claimed_user).to_vec();
        // Not header_list: a credentials value is itself a comma-separated parameter list.
        let credentials = msg
            .raw_values(&kind.credentials())
            .map(|value| value.as_str())
            .find(|value| starts_with_ignore_case(value, "digest "))
            .map(str::to_string);
        let stale = match credentials {
            None => false,
            Some(value) => {
                let config = &self.config;
                let outcome = self
                    .auth
                    .verify(now.mono, &method, &value, &algorithms, |user| {
                        config.extension(user).and_then(|e| e.password.clone())
                    });
                match outcome {
                    AuthOutcome::Authenticated { user } => return Some(user),
                    AuthOutcome::Stale => true,
                    AuthOutcome::Rejected(reason) => {
                        tracing::info!(
                            "{method} from {:?}: authentication failed: {reason}",
                            claimed_user
                        );
                        self.reply(now, tx, 403, "Forbidden");
                        return None;
                    }
                }
            }
        };
        let challenges = self.auth.challenge(now.mono, &algorithms, stale);
        let request = self.tx.request(tx)?;
        let (code, reason, header) = match kind {
            ChallengeKind::Registrar => (401, "Unauthorized", Name::WWW_AUTHENTICATE),
            ChallengeKind::Proxy => (
                407,
                "Proxy Authentication Required",
                Name::PROXY_AUTHENTICATE,
            ),
        };
        let mut response = request.response(code, reason, Some(&ids::tag()));
        for challenge in challenges {
            response.add_header(header.clone(), challenge);
        }
        self.tx.send_response(now.mono, tx, response);
        None
    }

    pub(super) fn on_register(&mut self, now: Now, tx: ServerTxId, msg: SipMessage, peer: Peer) {
        let Some(aor) = msg.to_header().and_then(|to| to.user()) else {
            self.reply(now, tx, 400, "Bad Request (To has no user part)");
            return;
        };
        let Some(user) = self.authenticate(now, tx, &msg, Some(&aor), ChallengeKind::Registrar)
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

    pub(super) fn expire_registrations(&mut self, now: Now) {
        for aor in self.registrar.expire(now.unix()) {
            tracing::info!("registration of {aor} expired");
            self.persist_bindings(now, &aor);
        }
    }

    fn persist_bindings(&mut self, now: Now, aor: &str) {
        self.store_commands
            .push_back(StoreCommand::ReplaceBindings {
                aor: aor.to_string(),
                bindings: self.registrar.lookup(now.unix(), aor),
            });
    }
}
