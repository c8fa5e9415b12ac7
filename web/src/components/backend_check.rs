//! The backend check: which backend computes here, on which adapter, and whether it agrees
//! with the CPU.

use leptos::prelude::*;

use crate::WebError;
use crate::client::WorkerClient;
use crate::protocol::{BackendPreference, ProbeReport};

/// Starts the worker, runs the probe there and shows the report.
#[component]
pub fn BackendCheck(preference: Result<BackendPreference, WebError>) -> impl IntoView {
    let report = LocalResource::new(move || {
        let preference = preference.clone();
        async move {
            let preference = preference?;
            let client = WorkerClient::spawn().await?;
            client.probe(preference).await
        }
    });
    view! {
        <section class="panel" aria-labelledby="backend-check-title">
            <h2 id="backend-check-title">"Backend check"</h2>
            <Suspense fallback=|| {
                view! { <p data-testid="probe-status" data-state="loading">"Computing…"</p> }
            }>
                <ErrorBoundary fallback=|errors| {
                    view! {
                        <p data-testid="probe-status" data-state="error">"Failed"</p>
                        <p class="error" role="alert" data-testid="probe-error">
                            {move || {
                                errors
                                    .get()
                                    .into_iter()
                                    .map(|(_, e)| e.to_string())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            }}
                        </p>
                    }
                }>
                    {move || Suspend::new(async move {
                        report.await.map(|report| view! { <ProbeView report /> })
                    })}
                </ErrorBoundary>
            </Suspense>
        </section>
    }
}

/// One probe report.
#[component]
fn ProbeView(report: ProbeReport) -> impl IntoView {
    let result_json = serde_json::to_string(&report.result).unwrap_or_default();
    let rows = report
        .result
        .chunks(report.cols.max(1))
        .map(|row| {
            view! {
                <tr>{row.iter().map(|v| view! { <td>{format!("{v:.6}")}</td> }).collect_view()}</tr>
            }
        })
        .collect_view();
    let adapter = report.adapter.clone().map(|a| {
        let f16 = if a.has_f16() {
            "yes"
        } else {
            "no (the f32 path is used)"
        };
        view! {
            <dl class="adapter" data-testid="adapter">
                <dt>"Vendor"</dt><dd>{a.vendor}</dd>
                <dt>"Architecture"</dt><dd>{a.architecture}</dd>
                <dt>"Device"</dt><dd>{a.device}</dd>
                <dt>"Description"</dt><dd>{a.description}</dd>
                <dt>"shader-f16"</dt><dd>{f16}</dd>
                <dt>"Features"</dt>
                <dd data-testid="adapter-features">{a.features.join(", ")}</dd>
            </dl>
        }
    });
    let verdict = if report.matches { "yes" } else { "no" };
    view! {
        <p data-testid="probe-status" data-state="done">"Done"</p>
        <p>
            "Backend: " <strong data-testid="probe-backend">{report.backend.as_str()}</strong>
            {report.fallback_reason.map(|reason| view! {
                <span class="banner" data-testid="probe-backend-reason">" — " {reason}</span>
            })}
        </p>
        {adapter}
        <p>
            "softmax(relu(x · w)) on " {report.backend.as_str()} ", "
            {format!("{:.1}", report.backend_ms)} " ms; on the CPU backend "
            {format!("{:.1}", report.cpu_ms)} " ms."
        </p>
        <table class="matrix" data-testid="probe-result" data-result=result_json>
            <tbody>{rows}</tbody>
        </table>
        <p>
            "Largest difference from the CPU backend: "
            <code data-testid="probe-diff">{format!("{:.2e}", report.max_abs_diff)}</code>
            ", from the plain reference: " <code>{format!("{:.2e}", report.reference_diff)}</code>
            " (tolerance " {format!("{:.0e}", report.tolerance)} "). Match: "
            <strong data-testid="probe-match">{verdict}</strong>
        </p>
    }
}
