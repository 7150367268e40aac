//! `--push`: the recording cut into windows of `--push-window` seconds. At the end of each,
//! every process's window counts become one [`Recording`] (children included), handed to
//! the [`Pusher`]'s queue; the aggregators that feed the local outputs are not touched.

use super::children::Children;
use super::{Profiled, RecordConfig, cpus_of};
use crate::model::recording::Recording;
use crate::model::report::PushCounts;
use crate::profile::RunInfo;
use crate::push::{self, PushConfig, Pusher};
use std::time::{Instant, SystemTime};

pub struct Windows {
    pusher: Pusher,
    push: PushConfig,
    began: Instant,
    began_wall: SystemTime,
}

impl Windows {
    /// Starts the sender and the first window; `main` and every child found later count
    /// their samples into windows too.
    pub fn start(
        config: &RecordConfig,
        push: &PushConfig,
        main: &mut Profiled,
        children: &mut Children,
    ) -> Windows {
        let app = push
            .app_name
            .clone()
            .unwrap_or_else(|| push::default_app_name(&main.command));
        main.aggregator.keep_windows();
        children.push_windows = true;
        Windows {
            pusher: Pusher::start(push, &app, config.rate_hz),
            push: push.clone(),
            began: Instant::now(),
            began_wall: SystemTime::now(),
        }
    }

    /// Ends the window if it is due.
    pub fn tick(&mut self, config: &RecordConfig, main: &mut Profiled, children: &mut Children) {
        if self.began.elapsed() >= self.push.window {
            self.close(config, main, children);
        }
    }

    /// Pushes the last (partial) window and waits a bounded time for the queue.
    pub fn finish(
        mut self,
        config: &RecordConfig,
        main: &mut Profiled,
        children: &mut Children,
    ) -> PushCounts {
        self.close(config, main, children);
        self.pusher.finish(push::EXIT_WAIT)
    }

    fn close(&mut self, config: &RecordConfig, main: &mut Profiled, children: &mut Children) {
        let (now, now_wall) = (Instant::now(), SystemTime::now());
        let span_s = now.duration_since(self.began).as_secs_f64();
        let mut recording = main.window_recording(config, span_s);
        let from_children: Vec<Recording> = children
            .profiled_mut()
            .map(|child| child.window_recording(config, span_s))
            .filter(|r| r.samples > 0)
            .collect();
        let has_samples = recording.samples > 0 || !from_children.is_empty();
        recording.children = from_children;
        if has_samples {
            self.pusher.submit(push::Window {
                recording,
                from: self.began_wall,
                until: now_wall,
                process_label: config.subprocesses,
            });
        }
        self.began = now;
        self.began_wall = now_wall;
    }
}

impl Profiled {
    /// The counts since the last window, as a recording of `span_s` seconds (empty when
    /// this process keeps no windows).
    fn window_recording(&mut self, config: &RecordConfig, span_s: f64) -> Recording {
        let a = self.aggregator.take_window().unwrap_or_default();
        let run = RunInfo {
            command: self.command.clone(),
            duration_s: span_s,
            requested_rate_hz: config.rate_hz,
            cpus: cpus_of(self.target.pid),
            ..RunInfo::default()
        };
        a.recording(&self.target, run)
    }
}
