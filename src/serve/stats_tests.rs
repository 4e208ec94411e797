//! Known values (computed independently with Python's `math.erfc`, and the textbook
//! examples named) that the statistics must reproduce.

use super::*;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} is not within {tol} of {b}");
}

#[test]
fn erfc_and_normal_tails_match_tables() {
    close(erfc(0.0), 1.0, 1e-7);
    close(erfc(1.0), 0.157_299_207, 1e-7);
    close(erfc(-1.0), 1.842_700_793, 1e-7);
    close(two_sided_p(1.96), 0.049_995_790, 1e-7);
    close(two_sided_p(-2.575_829), 0.01, 1e-6);
    close(two_sided_p(0.0), 1.0, 1e-7);
    assert!(two_sided_p(40.0) < 1e-300 || two_sided_p(40.0) == 0.0);
}

#[test]
fn two_proportions_5_against_8_percent_of_1000() {
    let t = two_proportion_z(50.0, 1000.0, 80.0, 1000.0).unwrap();
    close(t.z, 2.721_095_431, 1e-6);
    close(t.p_value, 0.006_506_597, 1e-6);
    assert!(t.significant());
    // the same rates on a tenth of the calls are not significant
    let t = two_proportion_z(5.0, 100.0, 8.0, 100.0).unwrap();
    assert!(!t.significant(), "{t:?}");
    // a drop has a negative statistic
    assert!(two_proportion_z(80.0, 1000.0, 50.0, 1000.0).unwrap().z < 0.0);
    assert_eq!(two_proportion_z(0.0, 100.0, 0.0, 100.0), None);
    assert_eq!(two_proportion_z(1.0, 0.0, 0.0, 100.0), None);
}

#[test]
fn poisson_rates_with_continuity_correction() {
    // 100 calls in 100 s against 150 in 100 s: z = (|150 - 125| - 0.5) / sqrt(62.5)
    let t = poisson_rate_test(100.0, 100.0, 150.0, 100.0).unwrap();
    close(t.z, 3.099_032_107, 1e-6);
    close(t.p_value, 0.001_941_540, 1e-6);
    assert!(t.significant());
    // equal rates over unequal exposure: 200 in 200 s against 100 in 100 s
    let t = poisson_rate_test(200.0, 200.0, 100.0, 100.0).unwrap();
    close(t.z, 0.0, 1e-12);
    close(t.p_value, 1.0, 1e-7);
    // 150 in 100 s against 150 in 200 s: the rate halved
    let t = poisson_rate_test(150.0, 100.0, 150.0, 200.0).unwrap();
    close(t.z, -6.062_487_113, 1e-6);
    assert!(t.significant());
    assert_eq!(poisson_rate_test(0.0, 10.0, 0.0, 10.0), None);
    assert_eq!(poisson_rate_test(5.0, 0.0, 5.0, 10.0), None);
}

#[test]
fn mann_whitney_separated_and_tied_samples() {
    // SciPy: mannwhitneyu([1..5], [6..10], method="asymptotic") -> p = 0.012185780
    let a = [1.0, 2.0, 3.0, 4.0, 5.0];
    let b = [6.0, 7.0, 8.0, 9.0, 10.0];
    let t = mann_whitney(&a, &b).unwrap();
    close(t.z, 2.506_718_246, 1e-6);
    close(t.p_value, 0.012_185_780, 1e-6);
    assert!(t.significant());
    assert!(mann_whitney(&b, &a).unwrap().z < 0.0);
    // ties get average ranks and the tie-corrected variance
    let t = mann_whitney(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 4.0, 5.0]).unwrap();
    close(t.z, 1.488_351_394, 1e-6);
    close(t.p_value, 0.136_658_248, 1e-6);
    assert!(!t.significant());
    assert_eq!(mann_whitney(&[], &b), None);
    assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0]), None);
    // NaN (windows without calls) are left out
    let t = mann_whitney(&[1.0, f64::NAN, 2.0, 3.0, 4.0, 5.0], &b).unwrap();
    close(t.p_value, 0.012_185_780, 1e-6);
}

#[test]
fn least_squares_lines() {
    let line = fit_line(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
    close(line.slope, 2.0, 1e-12);
    close(line.at(0.0), 1.0, 1e-12);
    close(line.r2.unwrap(), 1.0, 1e-12);
    close(line.crossing(10.0).unwrap(), 4.5, 1e-12);
    // the textbook example: y = 2.2 + 0.6 x, r² = 0.6
    let pts = [(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)];
    let line = fit_line(&pts).unwrap();
    close(line.slope, 0.6, 1e-12);
    close(line.at(0.0), 2.2, 1e-12);
    close(line.r2.unwrap(), 0.6, 1e-12);
    assert_eq!(line.points, 5);
    // unix-second x values lose no precision
    let t0 = 1.767e9;
    let pts: Vec<(f64, f64)> = (0..10)
        .map(|i| (t0 + f64::from(i) * 10.0, 100.0 + 0.5 * f64::from(i) * 10.0))
        .collect();
    let line = fit_line(&pts).unwrap();
    close(line.slope, 0.5, 1e-9);
    close(line.crossing(200.0).unwrap(), t0 + 200.0, 1e-6);
    // a falling line reaches a lower bound later
    let line = fit_line(&[(0.0, 10.0), (1.0, 8.0)]).unwrap();
    close(line.crossing(0.0).unwrap(), 5.0, 1e-12);
    // flat: no crossing, r² undefined
    let flat = fit_line(&[(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)]).unwrap();
    assert_eq!((flat.crossing(5.0), flat.r2), (None, None));
    assert_eq!(fit_line(&[(1.0, 2.0)]), None);
    assert_eq!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]), None);
    assert_eq!(fit_line(&[(0.0, 1.0), (1.0, f64::NAN)]), None);
}
