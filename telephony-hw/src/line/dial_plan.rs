//! Dial plans for analog phones, in Asterisk's pattern notation: `X` any digit, `N` 2-9,
//! `Z` 1-9, other characters literally, and a trailing `.` (one or more more digits) or `!`
//! (zero or more). The line asks the plan after every digit whether the number is complete.

/// How the digits so far relate to the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanMatch {
    /// A complete number: dial it now.
    Complete,
    /// A complete number that could also grow (variable length): wait for the inter-digit
    /// timeout, then dial it.
    CompleteOrLonger,
    /// A prefix of a number: keep collecting.
    Incomplete,
    /// Matches nothing: congestion.
    Invalid,
}

/// A list of patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPlan {
    patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum One {
    None,
    Prefix,
    Full,
    FullVariable,
}

fn class_matches(pattern: char, digit: char) -> bool {
    match pattern.to_ascii_uppercase() {
        'X' => digit.is_ascii_digit(),
        'N' => ('2'..='9').contains(&digit),
        'Z' => ('1'..='9').contains(&digit),
        other => other == digit.to_ascii_uppercase(),
    }
}

fn match_one(pattern: &str, digits: &str) -> One {
    let (fixed, tail) = match pattern.chars().last() {
        Some(t @ ('.' | '!')) => (&pattern[..pattern.len() - 1], Some(t)),
        _ => (pattern, None),
    };
    let fixed: Vec<char> = fixed.chars().collect();
    let digits: Vec<char> = digits.chars().collect();
    if !fixed
        .iter()
        .zip(&digits)
        .all(|(&p, &d)| class_matches(p, d))
    {
        return One::None;
    }
    match (digits.len().cmp(&fixed.len()), tail) {
        (std::cmp::Ordering::Less, _) => One::Prefix,
        (std::cmp::Ordering::Equal, None) => One::Full,
        (std::cmp::Ordering::Equal, Some('.')) => One::Prefix,
        (std::cmp::Ordering::Equal, Some(_)) => One::FullVariable,
        (std::cmp::Ordering::Greater, Some(_)) => One::FullVariable,
        (std::cmp::Ordering::Greater, None) => One::None,
    }
}

impl DialPlan {
    /// A plan from patterns such as `2XX`, `**2XX`, `*8`, `9N.`.
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> DialPlan {
        DialPlan {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// Classifies the digits dialled so far.
    pub fn classify(&self, digits: &str) -> PlanMatch {
        let results: Vec<One> = self.patterns.iter().map(|p| match_one(p, digits)).collect();
        let full = results.contains(&One::Full);
        let variable = results.contains(&One::FullVariable);
        let prefix = results.contains(&One::Prefix);
        match (full, variable, prefix) {
            (true, false, false) => PlanMatch::Complete,
            (true, _, _) | (false, true, _) => PlanMatch::CompleteOrLonger,
            (false, false, true) => PlanMatch::Incomplete,
            (false, false, false) => PlanMatch::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn office_plan() {
        let plan = DialPlan::new(["2XX", "10X", "*8", "**2XX", "9N."]);
        assert_eq!(plan.classify("2"), PlanMatch::Incomplete);
        assert_eq!(plan.classify("201"), PlanMatch::Complete);
        assert_eq!(plan.classify("2011"), PlanMatch::Invalid);
        assert_eq!(plan.classify("*8"), PlanMatch::Complete);
        assert_eq!(plan.classify("**"), PlanMatch::Incomplete);
        assert_eq!(plan.classify("**201"), PlanMatch::Complete);
        assert_eq!(plan.classify("9"), PlanMatch::Incomplete);
        assert_eq!(plan.classify("91"), PlanMatch::Invalid, "N is 2-9");
        assert_eq!(
            plan.classify("95"),
            PlanMatch::Incomplete,
            "9N. needs one more digit"
        );
        assert_eq!(plan.classify("955"), PlanMatch::CompleteOrLonger);
        assert_eq!(plan.classify("5"), PlanMatch::Invalid);
    }
}
