//! Rate limits, like the reference PDS's: a global limit per client address, tighter ones per
//! address for the routes that cost the server (account creation, sign-in, mail) or that could
//! be used to guess passwords, sign-ins per identifier, and repo writes per account, counted in
//! points (a create costs 3, an update 2, a delete 1) per hour and per day.
//!
//! Each policy is a keyed GCRA limiter (`governor`): `limit` requests per `window`, refilled
//! evenly. Idle keys are dropped every minute, so memory follows the number of clients seen
//! in the last window, not all time.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub use crate::config::{LimitsConfig, Rate};
use crate::error::{RateLimitInfo, XrpcError};

// The standard library's monotonic clock: quanta's TSC clock (governor's default) was seen to
// disagree between the cores of a virtual machine, which kept refused keys refused.
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, MonotonicClock, StateInformationMiddleware>;

/// What a route is limited by, besides the global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Global,
    SessionIp,
    SessionIdentifier,
    SessionIdentifierDay,
    Signup,
    Mail,
    WritesHour,
    WritesDay,
}

impl Policy {
    const ALL: [Policy; 8] = [
        Policy::Global,
        Policy::SessionIp,
        Policy::SessionIdentifier,
        Policy::SessionIdentifierDay,
        Policy::Signup,
        Policy::Mail,
        Policy::WritesHour,
        Policy::WritesDay,
    ];

    fn rate(self, c: &LimitsConfig) -> Rate {
        match self {
            Policy::Global => c.global,
            Policy::SessionIp => c.session_ip,
            Policy::SessionIdentifier => c.session_identifier,
            Policy::SessionIdentifierDay => c.session_identifier_day,
            Policy::Signup => c.signup,
            Policy::Mail => c.mail,
            Policy::WritesHour => c.writes_hour,
            Policy::WritesDay => c.writes_day,
        }
    }

    /// The per-address policy of an XRPC method, if it has one beyond the global limit.
    pub fn of_method(nsid: &str) -> Option<Policy> {
        match nsid {
            "com.atproto.server.createSession" => Some(Policy::SessionIp),
            "com.atproto.server.createAccount" => Some(Policy::Signup),
            "com.atproto.server.requestPasswordReset"
            | "com.atproto.server.resetPassword"
            | "com.atproto.server.requestEmailConfirmation"
            | "com.atproto.server.confirmEmail"
            | "com.atproto.server.requestEmailUpdate"
            | "com.atproto.server.updateEmail"
            | "com.atproto.server.requestAccountDelete"
            | "com.atproto.server.deleteAccount"
            | "com.atproto.identity.requestPlcOperationSignature"
            | "com.atproto.identity.signPlcOperation" => Some(Policy::Mail),
            _ => None,
        }
    }
}

struct Limiter {
    rate: Rate,
    keyed: Keyed,
}

/// The limiters, one per policy. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    enabled: bool,
    limiters: Arc<Vec<(Policy, Limiter)>>,
}

impl RateLimits {
    pub fn new(config: &LimitsConfig) -> Self {
        let limiters = Policy::ALL
            .iter()
            .map(|&p| {
                let rate = p.rate(config);
                let burst = NonZeroU32::new(rate.limit).unwrap_or(NonZeroU32::MIN);
                let period = (rate.window / rate.limit.max(1)).max(Duration::from_nanos(1));
                let quota = Quota::with_period(period).expect("a period above zero").allow_burst(burst);
                let keyed: Keyed = RateLimiter::<String, _, _, StateInformationMiddleware>::new(
                    quota,
                    DefaultKeyedStateStore::default(),
                    MonotonicClock,
                );
                (p, Limiter { rate, keyed })
            })
            .collect();
        Self { enabled: config.enabled, limiters: Arc::new(limiters) }
    }

    /// Drops idle keys every minute while the runtime lives.
    pub fn start_sweeper(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                for (_, l) in this.limiters.iter() {
                    l.keyed.retain_recent();
                    l.keyed.shrink_to_fit();
                }
            }
        });
    }

    /// Counts `cost` units of `policy` for `key`: the state to report in headers, or a
    /// `RateLimitExceeded` error carrying it.
    pub fn check(&self, policy: Policy, key: &str, cost: u32) -> Result<Option<RateLimitInfo>, XrpcError> {
        if !self.enabled {
            return Ok(None);
        }
        let Some((_, l)) = self.limiters.iter().find(|(p, _)| *p == policy) else { return Ok(None) };
        let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let info = |remaining: u32, wait: Duration| RateLimitInfo {
            limit: l.rate.limit,
            remaining,
            reset: now_unix + wait.as_secs_f64().ceil() as u64,
            window: l.rate.window.as_secs(),
        };
        let per_unit = l.rate.window / l.rate.limit.max(1);
        let cost = NonZeroU32::new(cost.min(l.rate.limit)).unwrap_or(NonZeroU32::MIN);
        match l.keyed.check_key_n(&key.to_owned(), cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Some(info(remaining, per_unit * (l.rate.limit - remaining))))
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(MonotonicClock.now());
                Err(exceeded(info(0, wait)))
            }
            // More than the whole burst at once: never allowed (costs are capped above).
            Err(_) => Err(exceeded(info(0, l.rate.window))),
        }
    }
}

fn exceeded(info: RateLimitInfo) -> XrpcError {
    let mut e = XrpcError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "RateLimitExceeded",
        format!("Rate limit exceeded: {} per {} s; try again after {}", info.limit, info.window, info.reset),
    );
    e.rate_limit = Some(info);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: Rate) -> LimitsConfig {
        LimitsConfig {
            enabled: true,
            global: rate,
            session_ip: rate,
            session_identifier: rate,
            session_identifier_day: rate,
            signup: rate,
            mail: rate,
            writes_hour: rate,
            writes_day: rate,
        }
    }

    #[test]
    fn rates_parse_with_their_units() {
        assert_eq!(Rate::parse("3000/5m"), Ok(Rate { limit: 3000, window: Duration::from_secs(300) }));
        assert_eq!(Rate::parse("30/1d").unwrap().window, Duration::from_secs(86_400));
        assert_eq!(Rate::parse("5/h").unwrap().window, Duration::from_secs(3600));
        assert!(Rate::parse("0/5m").is_err());
        assert!(Rate::parse("10/5w").is_err());
        assert!(Rate::parse("ten").is_err());
    }

    #[test]
    fn a_key_runs_out_and_others_do_not() {
        let limits = RateLimits::new(&config(Rate { limit: 3, window: Duration::from_secs(3600) }));
        for left in [2, 1, 0] {
            let info = limits.check(Policy::Signup, "1.2.3.4", 1).unwrap().unwrap();
            assert_eq!((info.limit, info.remaining, info.window), (3, left, 3600));
        }
        let refused = limits.check(Policy::Signup, "1.2.3.4", 1).unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.error.as_str()), (429, "RateLimitExceeded"));
        assert!(refused.rate_limit.unwrap().reset > 0);
        assert!(limits.check(Policy::Signup, "5.6.7.8", 1).is_ok(), "another address has its own count");
        assert!(limits.check(Policy::Mail, "1.2.3.4", 1).is_ok(), "another policy has its own count");
        // Points: a cost larger than what is left is refused, a smaller one is not.
        assert!(limits.check(Policy::WritesHour, "did:plc:a", 3).is_ok());
        assert!(limits.check(Policy::WritesHour, "did:plc:a", 1).is_err());
    }

    #[test]
    fn methods_that_send_or_check_mailed_codes_share_the_mail_limit() {
        for nsid in [
            "com.atproto.server.requestPasswordReset",
            "com.atproto.server.resetPassword",
            "com.atproto.server.confirmEmail",
            "com.atproto.server.deleteAccount",
            "com.atproto.identity.signPlcOperation",
        ] {
            assert_eq!(Policy::of_method(nsid), Some(Policy::Mail), "{nsid}");
        }
        assert_eq!(Policy::of_method("com.atproto.server.createSession"), Some(Policy::SessionIp));
        assert_eq!(Policy::of_method("com.atproto.repo.getRecord"), None);
    }

    #[test]
    fn disabled_limits_count_nothing() {
        let mut c = config(Rate { limit: 1, window: Duration::from_secs(3600) });
        c.enabled = false;
        let limits = RateLimits::new(&c);
        for _ in 0..5 {
            assert_eq!(limits.check(Policy::Global, "k", 1), Ok(None));
        }
    }
}
