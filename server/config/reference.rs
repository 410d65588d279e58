//! The settings reference of `docs/configuration.md`, rendered from
//! [`SETTINGS`], so the documentation cannot drift from the code.

use super::SETTINGS;

/// Markdown for every setting: a table of keys, flags, variables and
/// defaults, then each key's full description.
pub fn reference() -> String {
    let mut out = String::new();
    out.push_str("| key | flag | environment | default |\n|---|---|---|---|\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "| [`{key}`](#{key}) | `{flag} {value}` | `{env}` | `{default}` |\n",
            key = s.key,
            flag = s.flag(),
            // A bare `|` would end the table cell, even in code.
            value = s.value.replace('|', "\\|"),
            env = s.env(),
            default = s.default,
        ));
    }
    for s in SETTINGS {
        out.push_str(&format!("\n### `{}`\n\n", s.key));
        for paragraph in s.paragraphs() {
            out.push_str(&paragraph);
            out.push_str("\n\n");
        }
        out.push_str(&format!(
            "Flag `{} {}`{}; environment `{}`; default `{}`.\n",
            s.flag(),
            s.value,
            if s.list {
                " (repeatable, or comma-separated)"
            } else {
                ""
            },
            s.env(),
            s.default
        ));
    }
    out
}
