//! The prompt presets (`switchscope_web::presets`): what the page starts with, what the menu
//! shows as chosen, and that every preset speaks the default model's task format.

use switchscope_web::presets::{DEFAULT_PRESET, PRESETS, preset, preset_of, starting_prompt};
use switchscope_web::protocol::Settings;
use wasm_bindgen_test::wasm_bindgen_test;

fn start(params: &[(&str, &str)]) -> (Result<String, String>, Settings) {
    let mut settings = Settings::default();
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| (*v).to_owned())
    };
    (starting_prompt(get, &mut settings), settings)
}

#[wasm_bindgen_test]
fn the_page_starts_with_the_default_preset_unless_the_url_says_otherwise() {
    let (prompt, settings) = start(&[]);
    let default = preset(DEFAULT_PRESET).unwrap();
    assert_eq!(prompt.unwrap(), default.prompt);
    assert_eq!(settings.max_new_tokens, default.max_new_tokens);

    // prompt= wins, and leaves the settings as the URL made them.
    let (prompt, settings) = start(&[("prompt", "The <extra_id_0> walks."), ("preset", "code")]);
    assert_eq!(prompt.unwrap(), "The <extra_id_0> walks.");
    assert_eq!(settings, Settings::default());

    let (prompt, settings) = start(&[("preset", "es-en")]);
    assert_eq!(prompt.unwrap(), preset("es-en").unwrap().prompt);
    assert_eq!(settings.max_new_tokens, 64);
    // max_new_tokens= in the URL is kept (the caller already read it into the settings).
    let (_, settings) = start(&[("preset", "es-en"), ("max_new_tokens", "10")]);
    assert_eq!(settings.max_new_tokens, Settings::default().max_new_tokens);

    let err = start(&[("preset", "fr-de")]).0.unwrap_err();
    assert!(
        err.contains("\"fr-de\"") && err.contains("en-es, es-en"),
        "{err}"
    );
}

#[wasm_bindgen_test]
fn every_preset_is_named_once_and_speaks_the_models_formats() {
    for p in &PRESETS {
        assert_eq!(preset_of(p.prompt), Some(p), "{}", p.id);
        assert_eq!(preset(p.id), Ok(p));
        assert!(!p.provenance.is_empty());
        let task = [
            "translate English to Spanish: ",
            "translate Spanish to English: ",
            "modernize: ",
        ]
        .iter()
        .any(|prefix| p.prompt.starts_with(prefix));
        assert!(
            task || p.prompt.contains("<extra_id_0>"),
            "{}: a task prefix or a masked span",
            p.id
        );
    }
    assert_eq!(preset_of("something typed"), None);
}
