//! The `device` a session is known by: the client's `device_id`, or its `User-Agent`, turned
//! into a short label ("Chrome 131 on Linux") that is never cut mid-word.

/// Longest device label kept.
pub const MAX_DEVICE: usize = 128;

/// The label for a login: `device_id` if given (a full user-agent string is summarised),
/// else the summarised `User-Agent`, else `unknown`.
pub fn device_label(device_id: Option<&str>, user_agent: Option<&str>) -> String {
    let clean = device_id
        .map(visible)
        .filter(|s| !s.is_empty())
        .or(user_agent.map(visible).filter(|s| !s.is_empty()));
    let Some(clean) = clean else {
        return "unknown".into();
    };
    if clean.starts_with("Mozilla/") {
        if let Some(label) = summarise_user_agent(&clean) {
            return label;
        }
    }
    shorten(&clean, MAX_DEVICE)
}

/// What an admin list or a log line may show of client text: control characters become
/// spaces; Unicode format controls (Cf: bidi overrides such as U+202E, zero-width spaces,
/// the BOM) and line separators are dropped, so a label cannot reorder or hide text where
/// it is read. Trimmed.
fn visible(raw: &str) -> String {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    let kept: String = raw
        .chars()
        .filter_map(|c| match c.general_category() {
            G::Control => Some(' '),
            G::Format | G::LineSeparator | G::ParagraphSeparator => None,
            _ => Some(c),
        })
        .collect();
    kept.trim().to_string()
}

/// At most `max` characters, cut at a word boundary with `…` when shortened.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max - 1).collect();
    let cut = match head.rfind(char::is_whitespace) {
        Some(i) if i > 0 => head[..i].trim_end(),
        _ => head.as_str(), // one long word: nothing better than a hard cut
    };
    format!("{cut}…")
}

/// "Browser major-version on OS" from a browser's user-agent string.
fn summarise_user_agent(ua: &str) -> Option<String> {
    let version = |name: &str| {
        ua.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('/'))
            .map(|v| v.split('.').next().unwrap_or(v).to_string())
    };
    let browser = [
        ("Edg", "Edge"),
        ("OPR", "Opera"),
        ("Firefox", "Firefox"),
        ("HeadlessChrome", "Headless Chrome"),
        ("Chrome", "Chrome"),
        ("CriOS", "Chrome"),
    ]
    .iter()
    .find_map(|(token, name)| version(token).map(|v| format!("{name} {v}")))
    .or_else(|| {
        ua.contains("Safari/")
            .then(|| version("Version").map(|v| format!("Safari {v}")))
            .flatten()
    })?;
    let os = if ua.contains("iPhone") || ua.contains("iPad") {
        "iOS"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("CrOS") {
        "ChromeOS"
    } else if ua.contains("Linux") {
        "Linux"
    } else {
        return Some(browser);
    };
    Some(format!("{browser} on {os}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_become_short_labels() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(device_label(None, Some(chrome)), "Chrome 131 on Linux");
        assert_eq!(device_label(Some(chrome), None), "Chrome 131 on Linux");
        let headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/140.0.7339.80 Safari/537.36";
        assert_eq!(
            device_label(None, Some(headless)),
            "Headless Chrome 140 on Linux"
        );
        let ff = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(device_label(None, Some(ff)), "Firefox 133 on Windows");
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
        assert_eq!(device_label(None, Some(safari)), "Safari 18 on iOS");
    }

    #[test]
    fn long_ids_are_cut_at_a_word_boundary() {
        let id = "kitchen tablet ".repeat(20);
        let label = device_label(Some(&id), None);
        assert!(label.chars().count() <= MAX_DEVICE, "{label}");
        assert!(label.ends_with("tablet…"), "{label}");
        assert_eq!(device_label(Some("  my\nlaptop "), None), "my laptop");
        assert_eq!(device_label(Some(""), None), "unknown");
        assert_eq!(device_label(None, None), "unknown");
        let word = "x".repeat(300);
        assert_eq!(device_label(Some(&word), None).chars().count(), MAX_DEVICE);
    }

    #[test]
    fn format_controls_are_dropped() {
        let raw = "ph\u{202E}one\u{200B}\u{2066}\u{FEFF}\u{2028}\u{AD} 1\u{1}";
        assert_eq!(device_label(Some(raw), None), "phone 1");
        assert_eq!(device_label(Some("Ünïcødé 📱 ok"), None), "Ünïcødé 📱 ok");
        assert_eq!(device_label(Some("\u{202E}\u{200D}"), None), "unknown");
        assert_eq!(device_label(Some("\u{202E}"), Some("curl/8")), "curl/8");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a client sends, the label is short, non-empty, and holds no control or
        /// format character.
        #[test]
        fn labels_are_always_clean(
            id in proptest::collection::vec(proptest::prelude::any::<char>(), 0..200),
            ua in proptest::option::of("Mozilla/5.0 [ -~\u{200B}\u{202E}]{0,120}"),
        ) {
            use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
            let id: String = id.into_iter().collect();
            let out = device_label(Some(&id), ua.as_deref());
            proptest::prop_assert!(!out.is_empty() && out.chars().count() <= MAX_DEVICE);
            proptest::prop_assert!(out
                .chars()
                .all(|c| !matches!(c.general_category(), G::Control | G::Format)));
        }
    }
}
