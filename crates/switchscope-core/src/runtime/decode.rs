//! Greedy decoding on a GPU, pipelined: the next token is picked on the device and the next
//! step is queued from it before the host reads the current step back, so in the steady state
//! (every expert resident: the device chooses them) the host never waits for the device.
//!
//! Step n is queued (its reads, the token and the routing the device decided, started at once).
//! When step n + 1 cannot touch the expert store (every sparse layer chooses on the device), it
//! is queued from step n's token on the device before step n is read; otherwise the host reads
//! step n first (a host wait) and queues step n + 1 from the id it read. A queued step that turns
//! out not to be needed (step n ended the generation, or the caller stopped it) is discarded: its
//! read is drained after the last token, the decoder cache goes back to what it was before it,
//! and nothing of it reaches the steps, the trace or the store's counters (its kernels were
//! dispatched and count in the decode counts).

use switchscope_wire::LayerRouting;

use super::Switch;
use super::generate::{Decoding, GenerateOptions, Progress, Step};
use crate::CoreError;
use crate::counters;
use crate::kernels::{DeviceToken, Gpu, ReadLater, argmax};
use crate::model::routing::{PendingRoute, decisions, finish};
use crate::model::stack::DecoderCache;
use crate::model::{Encoded, StepInput};

/// A decode step on its way: its token on the device, its reads started.
struct Queued<'g> {
    token: DeviceToken,
    read: ReadLater<'g>,
    /// Layers the device routed, read with the token.
    pending: Vec<PendingRoute>,
    /// Layers routed on the host (their routing already read).
    routing: Vec<LayerRouting>,
}

impl Switch {
    /// Whether greedy decoding with these options runs pipelined on the device.
    pub(super) fn pipelines(&self, options: &GenerateOptions) -> Option<&Gpu> {
        let eligible = options.use_cache
            && options.run.block_clock.is_none()
            && matches!(options.sampling, switchscope_wire::Sampling::Greedy);
        self.gpu.as_ref().filter(|_| eligible)
    }

    async fn queue<'g>(
        &self,
        gpu: &'g Gpu,
        encoded: &Encoded,
        cache: &mut DecoderCache,
        input: StepInput<'_>,
        options: &GenerateOptions,
    ) -> Result<Queued<'g>, CoreError> {
        let (logits, mut routing, pending) = self
            .model
            .decode_step(&self.config, encoded, cache, input, options.run)
            .await?;
        let [_, t, v] = logits.dims();
        let token = argmax(gpu, logits.narrow(1, t - 1, 1).reshape([1, v]))?;
        let read = ReadLater::start(gpu, &token, decisions(&pending))?;
        Ok(Queued {
            token,
            read,
            pending,
            routing: routing.pop().unwrap_or_default(),
        })
    }

    /// Decodes greedily up to `options.max_new_tokens`, pipelined (see the module).
    pub(super) async fn decode_pipelined<F, Fut>(
        &self,
        gpu: &Gpu,
        encoded: &Encoded,
        cache: &mut DecoderCache,
        options: &GenerateOptions,
        on_progress: &mut F,
        at: Decoding<'_>,
    ) -> Result<(), CoreError>
    where
        F: FnMut(Progress<'_>) -> Fut,
        Fut: Future<Output = bool>,
    {
        let eos = self.config.eos_token_id;
        // the step queued ahead, and the cache as it was before it
        let mut ahead: Option<(Queued<'_>, DecoderCache)> = None;
        while at.steps.len() < options.max_new_tokens {
            let step = match ahead.take() {
                Some((queued, _)) => queued,
                None => {
                    let last = [*at.output.last().expect("starts with the start token")];
                    self.queue(gpu, encoded, cache, StepInput::Ids(&last, 1), options)
                        .await?
                }
            };
            if at.steps.len() + 1 < options.max_new_tokens && self.model.decodes_on_device() {
                let before = cache.clone();
                let input = StepInput::Device(gpu, &step.token);
                let next = self.queue(gpu, encoded, cache, input, options).await?;
                ahead = Some((next, before));
                counters::readback();
            } else {
                counters::host_wait();
            }
            let (token, rows) = step.read.finish().await?;
            let mut routing = step.routing;
            routing.extend(finish(&step.pending, &rows)?);
            let step = Step {
                token,
                routing,
                block_ms: Vec::new(),
            };
            at.output.push(token);
            *at.counts = at.tally.peek();
            let go_on = on_progress(Progress::Step(&step)).await;
            at.steps.push(step);
            let ends = token == eos || Some(token) == options.stop_at;
            if (ends && !options.ignore_eos) || !go_on {
                if let Some((unneeded, before)) = ahead.take() {
                    // its read is drained (a started read must finish before its staging
                    // memory is used again), and its routing never booked
                    unneeded.read.finish().await?;
                    *cache = before;
                }
                break;
            }
        }
        Ok(())
    }
}
