//! The small numeric and text functions: fits, burn rates, medians, globs, label names,
//! FNV-1a, templates, value formatting.

use super::*;

#[test]
fn math_helpers() {
    use super::eval::{burn_rate, crossing_in, linear_fit, median};
    let (a, b) = linear_fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
    assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
    assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
    assert_eq!(crossing_in(1.0, 2.0, 5.0, true), Some(2.0));
    assert_eq!(crossing_in(6.0, -1.0, 5.0, true), Some(0.0));
    assert_eq!(crossing_in(1.0, -1.0, 5.0, true), None);
    assert_eq!(crossing_in(1.0, -1.0, 0.0, false), Some(1.0));
    let h: std::collections::VecDeque<(i64, u64, u64)> = [(1, 100, 1), (2, 100, 3)].into();
    assert!((burn_rate(&h, 0, 0.99).unwrap() - 2.0).abs() < 1e-9);
    assert!((burn_rate(&h, 1, 0.99).unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(burn_rate(&h, 2, 0.99), None);
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(&mut []).is_nan());
}

#[test]
fn text_helpers() {
    use super::template::{format_ns, format_share, format_value, Fnv};
    use crate::model::label_name;
    assert_eq!(Fnv::default().finish(), 0xcbf2_9ce4_8422_2325);
    assert_eq!(Fnv::default().bytes(b"a").finish(), 0xaf63_dc4c_8601_ec8c);
    assert_ne!(
        fingerprint("r", [("a", "bc")]),
        fingerprint("r", [("ab", "c")])
    );
    assert!(
        glob_match("llm-*", "llm-openai") && glob_match("*a*b", "xaxb") && glob_match("a", "a")
    );
    assert!(
        !glob_match("llm-*", "vector") && !glob_match("*a*b", "xbxa") && !glob_match("a*a", "a")
    );
    assert_eq!(label_name("attr.http.route"), "attr_http_route");
    assert_eq!(label_name("9x"), "_9x");
    assert_eq!(format_ns(1_250_000_000.0), "1s 250ms");
    assert_eq!(format_ns(1_500.0), "1us");
    assert_eq!(format_ns(500.0), "500ns");
    assert_eq!(format_value(0.123456, false), "0.1235");
    assert_eq!(format_value(42.0, false), "42");
    assert_eq!(format_share(0.904_62), "90.46%");
    assert_eq!(format_share(0.2), "20%");
    assert_eq!(format_share(1.0), "100%");
    assert_eq!(format_share(0.000_04), "0%");
    let t = Template::parse("{{ service }} is {{value}}!").unwrap();
    assert_eq!(t.render(|n| (n == "service").then_some("db")), "db is !");
    assert!(Template::parse("{{service").is_err());
    assert!(Template::parse("{{}}").is_err());
}
