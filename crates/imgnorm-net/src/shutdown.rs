//! Process shutdown signals: Ctrl-C (SIGINT) and SIGTERM (what `docker stop`
//! sends). The first one resolves [`signal`], which servers and workers take
//! as their shutdown input, and is remembered for the exit code
//! ([`Signal::exit_code`]: 130 for SIGINT, 143 for SIGTERM, as a shell
//! reports a process killed by them); a second one exits at once with that
//! code. The handlers are installed by the first call of [`signal`] or
//! [`install`], and stay for the life of the process.
use std::sync::OnceLock;

use tokio::sync::watch;

/// A shutdown signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit code of a process stopped by this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

static RECEIVED: OnceLock<watch::Sender<Option<Signal>>> = OnceLock::new();

/// Installs the handlers (once; later calls do nothing). Must run inside a
/// Tokio runtime. Call it before long work starts, so a signal that arrives
/// during setup is seen too.
pub fn install() {
    let mut fresh = false;
    let tx = RECEIVED.get_or_init(|| {
        fresh = true;
        watch::channel(None).0
    });
    if !fresh {
        return;
    }
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        let mut count = 0u32;
        loop {
            let sig = signals.next().await;
            count += 1;
            if count > 1 {
                eprintln!("imgnorm: second {}: exiting now", sig.name());
                std::process::exit(i32::from(sig.exit_code()));
            }
            tx.send_replace(Some(sig));
        }
    });
}

/// The process's SIGINT and SIGTERM listeners.
struct Signals {
    #[cfg(unix)]
    both: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                both: signal(SignalKind::interrupt())
                    .ok()
                    .zip(signal(SignalKind::terminate()).ok()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let Some((int, term)) = self.both.as_mut() else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

/// Resolves on the first Ctrl-C or SIGTERM (at once if one already came).
pub async fn signal() {
    install();
    let Some(tx) = RECEIVED.get() else {
        return std::future::pending().await;
    };
    let mut rx = tx.subscribe();
    let _ = rx.wait_for(Option::is_some).await;
}

/// The signal received so far, if any.
pub fn received() -> Option<Signal> {
    RECEIVED.get().and_then(|tx| *tx.borrow())
}
