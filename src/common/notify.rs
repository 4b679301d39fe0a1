//! systemd's service notifications (`Type=notify`), through the `sd-notify`
//! crate: `READY=1` once the listeners are bound, `RELOADING=1` (with
//! `MONOTONIC_USEC`) and then `READY=1` around a reload, `STOPPING=1` when
//! shutdown begins, and `WATCHDOG=1` at half of `WATCHDOG_USEC`.
//!
//! The watchdog is fed by the caller's main loop as it makes progress
//! ([`Notifier::watchdog`]), never by a timer of its own: a loop that hangs
//! stops the pings and systemd restarts the service.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, or in tests that do not ask
//! for it) every call does nothing. The environment is read once, by
//! [`Notifier::from_env`] in the binary; the library is handed a
//! [`Notifier`].

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager, or nothing.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// One that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// From the process's environment: enabled if `NOTIFY_SOCKET` is set;
    /// a watchdog if `WATCHDOG_USEC` is, and `WATCHDOG_PID` (if set) is
    /// this process.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET").is_some(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// [`Notifier::from_env`] from given values.
    pub fn from_vars(
        notify_socket: bool,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Self {
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>() == Ok(pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && notify_socket)
            .map(Duration::from_micros);
        Self {
            enabled: notify_socket,
            watchdog,
        }
    }

    /// How often to ping the watchdog (half its timeout), if there is one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// `READY=1`: the listeners are bound and the service is serving.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready], "READY");
    }

    /// `RELOADING=1` with the monotonic time, as `Type=notify-reload` asks.
    pub fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now], "RELOADING"),
            Err(_) => self.send(&[NotifyState::Reloading], "RELOADING"),
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping], "STOPPING");
    }

    /// `WATCHDOG=1`, if there is a watchdog: call it from the main loop,
    /// each time round.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog], "WATCHDOG");
        }
    }

    fn send(&self, states: &[NotifyState<'_>], what: &str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(notification = what, error = %e, "cannot notify systemd");
        }
    }
}

/// Ticks at the watchdog's interval, or never: for a main loop's `select!`.
#[derive(Debug)]
pub struct WatchdogTicks(Option<tokio::time::Interval>);

impl WatchdogTicks {
    pub fn new(notifier: &Notifier) -> Self {
        Self(notifier.watchdog_interval().map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    /// Completes at the next tick (never, without a watchdog).
    pub async fn tick(&mut self) {
        match self.0.as_mut() {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_on_only_under_a_notify_socket_for_this_process() {
        let on = Notifier::from_vars(true, Some("30000000"), None, 7);
        assert_eq!(on.watchdog_interval(), Some(Duration::from_secs(15)));
        let ours = Notifier::from_vars(true, Some("30000000"), Some("7"), 7);
        assert_eq!(ours.watchdog_interval(), Some(Duration::from_secs(15)));
        for off in [
            Notifier::from_vars(true, Some("30000000"), Some("8"), 7),
            Notifier::from_vars(false, Some("30000000"), None, 7),
            Notifier::from_vars(true, Some("soon"), None, 7),
            Notifier::from_vars(true, Some("0"), None, 7),
            Notifier::from_vars(true, None, None, 7),
        ] {
            assert_eq!(off.watchdog_interval(), None, "{off:?}");
        }
        assert!(!Notifier::disabled().enabled);
    }
}
