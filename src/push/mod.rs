//! `--push URL`: continuous mode. Every window's profile (pprof, with the GIL state of each
//! sample as a label) goes to a Pyroscope server's `/ingest` endpoint. Sampling never waits
//! for the network: windows go through a bounded queue to a sender thread, which retries a
//! failed request with backoff and then drops the window. Every request has connect and
//! total timeouts, and at the end gilscope waits a bounded time for what is still queued.
//! See docs/fleet.md.

pub mod ingest;

use crate::model::recording::Recording;
use crate::model::report::PushCounts;
use crate::output::pprof;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Windows waiting to be sent; one more is dropped (and counted) rather than queued.
const QUEUE_WINDOWS: usize = 4;
/// Tries per window, the first included.
const MAX_TRIES: u32 = 3;
/// Wait before the second try; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest gilscope waits, once sampling has ended, for queued windows to be sent.
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

/// What `--push` and its companion options asked for.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The server's base URL (`http://host:4040`); `/ingest` is appended.
    pub url: String,
    /// The application name; the target's command name when not given.
    pub app_name: Option<String>,
    /// Static labels added to the series name (`app{k=v,...}`).
    pub labels: Vec<(String, String)>,
    /// Headers sent with every request (authentication); never printed.
    pub headers: Vec<ingest::Header>,
    /// How much recording each pushed profile covers.
    pub window: Duration,
}

/// One window's recording, to be encoded and sent.
pub struct Window {
    pub recording: Recording,
    pub from: SystemTime,
    pub until: SystemTime,
    /// Label samples with their process (with --subprocesses).
    pub process_label: bool,
}

struct Shared {
    counts: Mutex<PushCounts>,
    /// Sampling has ended: no more backoff waits, one try per window left.
    closing: AtomicBool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut PushCounts)) {
        if let Ok(mut counts) = self.counts.lock() {
            change(&mut counts);
        }
    }
}

/// The sender thread and the queue to it.
pub struct Pusher {
    queue: Option<SyncSender<Window>>,
    shared: Arc<Shared>,
    finished: Receiver<()>,
}

impl Pusher {
    /// Starts the sender thread for `app` (the application name, already checked).
    pub fn start(config: &PushConfig, app: &str, rate_hz: f64) -> Pusher {
        let endpoint = ingest::Endpoint::new(config, app, rate_hz);
        let shared = Arc::new(Shared {
            counts: Mutex::new(PushCounts::default()),
            closing: AtomicBool::new(false),
        });
        let (queue, windows) = std::sync::mpsc::sync_channel(QUEUE_WINDOWS);
        let (finished_tx, finished) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("gilscope-push".to_string())
            .spawn(move || {
                for window in windows {
                    send_window(&endpoint, &thread_shared, &window);
                }
                let _ = finished_tx.send(());
            });
        // Without a sender every window is dropped; the recording itself goes on.
        let queue = match spawned {
            Ok(_) => Some(queue),
            Err(e) => {
                shared
                    .update(|c| c.last_error = Some(format!("cannot start the push thread: {e}")));
                None
            }
        };
        Pusher {
            queue,
            shared,
            finished,
        }
    }

    /// Hands a window to the sender thread without waiting; a full queue drops it.
    pub fn submit(&mut self, window: Window) {
        self.shared.update(|c| c.windows += 1);
        let Some(queue) = self.queue.as_ref() else {
            return;
        };
        match queue.try_send(window) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.update(|c| c.dropped += 1);
            }
        }
    }

    /// Closes the queue and waits at most `wait` for the windows in it; what is not sent
    /// by then counts as dropped.
    pub fn finish(mut self, wait: Duration) -> PushCounts {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.queue = None;
        // Disconnected: there never was a sender thread, or it ended.
        let finished = !matches!(
            self.finished.recv_timeout(wait),
            Err(RecvTimeoutError::Timeout)
        );
        let mut counts = self
            .shared
            .counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        counts.dropped = counts.windows.saturating_sub(counts.sent);
        if !finished {
            counts.last_error = Some(format!(
                "the server had not answered {} s after sampling ended",
                wait.as_secs()
            ));
        }
        counts
    }
}

fn send_window(endpoint: &ingest::Endpoint, shared: &Shared, window: &Window) {
    let options = pprof::Options {
        start: window.from,
        process_label: window.process_label,
    };
    let body = match pprof::encode_gzip(&window.recording, &options) {
        Ok(body) => body,
        Err(e) => {
            shared.update(|c| {
                c.failed += 1;
                c.last_error = Some(format!("cannot encode the profile: {e:#}"));
            });
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_TRIES {
        match endpoint.send(&body, window.from, window.until) {
            Ok(()) => {
                shared.update(|c| c.sent += 1);
                return;
            }
            Err(failure) => {
                let retry = failure.retry;
                shared.update(|c| {
                    c.failed += 1;
                    c.last_error = Some(failure.message);
                });
                let closing = shared.closing.load(Ordering::SeqCst);
                if !retry || closing || attempt == MAX_TRIES {
                    return;
                }
                if !sleep_unless_closing(shared, backoff) {
                    return;
                }
                backoff *= 2;
            }
        }
    }
}

/// Sleeps for `span`, or less if sampling ends meanwhile; false if it did.
fn sleep_unless_closing(shared: &Shared, span: Duration) -> bool {
    let until = Instant::now() + span;
    while Instant::now() < until {
        if shared.closing.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !shared.closing.load(Ordering::SeqCst)
}

/// The default application name: the target's command name (`python3`, `gunicorn`), made
/// safe for a series name.
pub fn default_app_name(command: &[String]) -> String {
    let program = command
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("python");
    let name: String = program
        .chars()
        .map(|c| if ingest::is_name_char(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        "python".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_app_name_is_the_command_name() {
        let command = vec!["/usr/bin/python3.11".to_string(), "app.py".to_string()];
        assert_eq!(default_app_name(&command), "python3.11");
        assert_eq!(default_app_name(&["my app".to_string()]), "my_app");
        assert_eq!(default_app_name(&[]), "python");
    }
}
