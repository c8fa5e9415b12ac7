//! The browser's parts of the benchmarks: the app in headless Chromium against the native
//! runtime on the same driver, and the cold start.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Bench {
    /// `node tests/bench/page.mjs MODE ...` against the served dist/.
    pub(super) fn page(&self, mode: &str, backend: &str, runs: usize, name: &str) -> Result<Value> {
        self.page_with(mode, backend, runs, name, &[])
    }

    /// [`Self::page`] with more arguments for page.mjs.
    fn page_with(
        &self,
        mode: &str,
        backend: &str,
        runs: usize,
        name: &str,
        extra: &[&str],
    ) -> Result<Value> {
        let addr = serve::spawn(root().join("dist"))?;
        let out = self.out.join(name);
        tools::run(
            self.tools
                .command("node")
                .args(["tests/bench/page.mjs", mode, "--backend", backend])
                .args(["--runs", &runs.to_string(), "--prompt", PROMPT])
                .args(extra)
                .arg("--out")
                .arg(&out)
                .env("SWITCHSCOPE_URL", format!("http://{addr}/")),
        )?;
        Ok(serde_json::from_str(&std::fs::read_to_string(&out)?)?)
    }

    pub(super) fn browser(&mut self) -> Result<()> {
        let mut section = vec![
            "## 2. Browser vs native on the same driver\n".to_owned(),
            format!("The default model, the same prompt ({} words, every fourth masked), greedy. In the browser: the app's own figures (Performance panel), {} runs after a warm-up run in one page. Native: `switchscope bench speed` with the prompt, decoding as many tokens as the page produced. On WebGPU both sides with every expert resident (the page's `resident=all`, `--all-resident` natively), a warm session.\n", PROMPT.split(' ').count(), self.runs),
            "| backend | where | driver | encoder ms | decode tokens/s | browser / native (decode) | browser / native (encoder time) |".to_owned(),
            "|---|---|---|---|---|---|---|".to_owned(),
        ];
        let mut goals = Vec::new();
        let mut notes = Vec::new();
        let mut all = serde_json::Map::new();
        for (backend, native_backend, icd, driver) in [
            (
                "webgpu",
                "wgpu",
                Some(SWIFTSHADER_ICD),
                "SwiftShader (Vulkan, CPU)",
            ),
            ("cpu", "cpu", None, "burn Flex (wasm vs x86_64)"),
        ] {
            // On a GPU both sides in a warm session's steady state: every expert resident, so
            // the decode loop chooses experts and picks tokens on the device.
            let resident: &[&str] = if backend == "webgpu" {
                &["--all-resident"]
            } else {
                &[]
            };
            let page = self.page_with(
                "speed",
                backend,
                self.runs,
                &format!("page-speed-{backend}.json"),
                resident,
            )?;
            let tokens = num(&page, "tokens").round().max(2.0) as usize;
            let tokens = tokens.to_string();
            let mut args = vec!["--prompt", PROMPT, "--new-tokens", &tokens];
            args.extend(resident);
            let native = self.speed(Path::new(MODEL), native_backend, icd, &args)?;
            let native_encoder_ms = num(&native, "encoder_ms");
            let decode_ratio =
                num(&page, "decode_tokens_per_s") / num(&native, "decode_tokens_per_s");
            let encoder_ratio = native_encoder_ms / num(&page, "encoder_ms");
            section.push(format!(
                "| {backend} | Chromium (headless) | {driver} | {:.0} | {:.2} | {:.0} % | {:.0} % |",
                num(&page, "encoder_ms"),
                num(&page, "decode_tokens_per_s"),
                100.0 * decode_ratio,
                100.0 * encoder_ratio
            ));
            section.push(format!(
                "| {native_backend} | native (`switchscope`) | {driver} | {native_encoder_ms:.0} | {:.2} | | |",
                num(&native, "decode_tokens_per_s")
            ));
            if backend == "webgpu" {
                goals.push(format!(
                    "- WebGPU in Chromium at {:.0} % of native wgpu's decode tokens/s on SwiftShader (goal ≥ 80 %): **{}**",
                    100.0 * decode_ratio,
                    met(decode_ratio, 0.8)
                ));
                let waits = [
                    num(&page, "host_waits_per_token"),
                    num(&native, "host_waits_per_token"),
                ];
                goals.push(format!(
                    "- Host waits per decoded token, every expert resident: {:.2} in the page, {:.2} natively (goal ≤ 0.25): **{}**",
                    waits[0],
                    waits[1],
                    met(0.25, waits[0].max(waits[1]))
                ));
                let overhead = self.page("overhead", "webgpu", 1, "page-overhead.json")?;
                notes.push(format!(
                    "Adapter in the page: {}. Its fixed costs (`node tests/bench/page.mjs overhead`): a one-kernel dispatch read back with mapAsync, median {:.1} ms; a dispatch submitted on its own, {:.2} ms on average.",
                    page["adapter"],
                    num(&overhead, "readback_ms_median"),
                    num(&overhead, "dispatch_submit_ms_mean")
                ));
            }
            all.insert(
                backend.to_owned(),
                serde_json::json!({ "page": page, "native": native }),
            );
        }
        section.push(String::new());
        section.extend(notes);
        section.push(String::new());
        section.extend(goals);
        section.push(String::new());
        std::fs::write(
            self.out.join("browser.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        self.report.push(section.join("\n"));
        Ok(())
    }

    pub(super) fn coldstart(&mut self) -> Result<()> {
        let runs = self.runs.min(3);
        let mut section = vec![
            "## 5. Cold start in the browser\n".to_owned(),
            format!(
                "Navigation to the first generated token with `?autorun=1` (the default model, served from localhost): a fresh profile (empty cache), then a reload in the same profile (service worker and shard cache warm). Median of {runs} fresh profiles. The browser reaches the server through a counting proxy on localhost: the last column is the first visit's bytes over the wire against the bytes of the distinct files it needed, each counted as it crossed the wire (compressed where it was), after the service worker installed (goal: 1.00).\n"
            ),
            "| backend | cache | navigation → first token, ms | model MB over the network | app MB | service worker precache MB | first visit: MB over the wire / MB of distinct files |".to_owned(),
            "|---|---|---|---|---|---|---|".to_owned(),
        ];
        let mut all = serde_json::Map::new();
        for backend in ["cpu", "webgpu"] {
            let v = self.page(
                "coldstart",
                backend,
                runs,
                &format!("page-coldstart-{backend}.json"),
            )?;
            for cache in ["cold", "warm"] {
                let bytes = &v[format!("{cache}_bytes")];
                let wire = &v["cold_wire"];
                let once = if cache == "cold" {
                    format!(
                        "{:.2} / {:.2} = {:.3}",
                        num(wire, "wire") / 1e6,
                        num(wire, "distinct") / 1e6,
                        num(wire, "ratio")
                    )
                } else {
                    String::new()
                };
                section.push(format!(
                    "| {backend} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {once} |",
                    if cache == "cold" { "empty" } else { "warm" },
                    num(&v, &format!("{cache}_first_token_ms")),
                    num(bytes, "model") / 1e6,
                    num(bytes, "app") / 1e6,
                    num(bytes, "precache") / 1e6
                ));
            }
            all.insert(backend.to_owned(), v);
        }
        section.push(String::new());
        std::fs::write(
            self.out.join("coldstart.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        self.report.push(section.join("\n"));
        Ok(())
    }
}
