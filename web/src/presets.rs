//! Prompt presets: the tasks the default model was trained on, one choice each. A preset fills
//! the prompt box and the max new tokens, nothing else; `prompt=` in the URL still wins, and
//! `preset=ID` starts with that preset.

use crate::protocol::Settings;

/// One preset of the prompt menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Its name in `preset=`.
    pub id: &'static str,
    /// Its name in the menu.
    pub label: &'static str,
    pub prompt: &'static str,
    /// Enough for the whole answer (a verse takes up to about 60 tokens).
    pub max_new_tokens: usize,
    /// Whether the model saw this text while training, for the line under the menu.
    pub provenance: &'static str,
}

/// The preset the page starts with ([`starting_prompt`]): a held-out verse to translate, the
/// default model's main task (its model card has the held-out scores).
pub const DEFAULT_PRESET: &str = "en-es";

/// The presets. The verses are from chapters held out of every training task and of the corpus
/// (`tools/model/heldout/`), so the answers are the model's own.
pub const PRESETS: [Preset; 5] = [
    Preset {
        id: "en-es",
        label: "English → Spanish",
        prompt: "translate English to Spanish: And Ephron answered Abraham, saying unto him,",
        max_new_tokens: 64,
        provenance: "A held-out verse (Genesis 23:14, King James Version): not in the training data. \
                     Reina-Valera 1909 has \"Y respondió Ephrón á Abraham, diciéndole:\"",
    },
    Preset {
        id: "es-en",
        label: "Spanish → English",
        prompt: "translate Spanish to English: Y respondieron los hijos de Heth á Abraham, y dijéronle:",
        max_new_tokens: 64,
        provenance: "A held-out verse (Genesis 23:5, Reina-Valera 1909): not in the training data. \
                     The King James Version has \"And the children of Heth answered Abraham, saying unto him,\"",
    },
    Preset {
        id: "modernize",
        label: "Modernize (King James → World English Bible)",
        prompt: "modernize: And Ephron answered Abraham, saying unto him,",
        max_new_tokens: 64,
        provenance: "A held-out verse (Genesis 23:14, King James Version): not in the training data. \
                     The World English Bible has \"Ephron answered Abraham, saying to him,\"",
    },
    Preset {
        id: "prose",
        label: "Fill in prose",
        prompt: "Fellow-Citizens of the Senate and of the House of <extra_id_0>:",
        max_new_tokens: 24,
        provenance: "The opening of a State of the Union address: this text is in the training data.",
    },
    Preset {
        id: "code",
        label: "Fill in Python",
        prompt: "def __init__(self, <extra_id_0>):\n    self.name = name",
        max_new_tokens: 24,
        provenance: "Written for this menu; Python's standard library is in the training data.",
    },
];

/// The preset `preset=` names.
///
/// # Errors
/// A sentence naming the unknown preset and the known ones.
pub fn preset(id: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.id == id).ok_or_else(|| {
        let known: Vec<&str> = PRESETS.iter().map(|p| p.id).collect();
        format!(
            "unknown preset={id:?} in the URL: use one of {}",
            known.join(", ")
        )
    })
}

/// The preset whose prompt the box holds, if any (what the menu shows as chosen).
pub fn preset_of(prompt: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.prompt == prompt)
}

/// The prompt the page starts with, and `settings` adjusted for it: `prompt=` as given;
/// otherwise `preset=`'s (or [`DEFAULT_PRESET`]'s) prompt, with its max new tokens unless
/// `max_new_tokens=` is in the URL.
///
/// # Errors
/// An unknown `preset=`.
pub fn starting_prompt(
    get: impl Fn(&str) -> Option<String>,
    settings: &mut Settings,
) -> Result<String, String> {
    if let Some(prompt) = get("prompt") {
        return Ok(prompt);
    }
    let id = get("preset").filter(|p| !p.is_empty());
    let chosen = preset(id.as_deref().unwrap_or(DEFAULT_PRESET))?;
    if get("max_new_tokens").is_none() {
        settings.max_new_tokens = chosen.max_new_tokens;
    }
    Ok(chosen.prompt.to_owned())
}
