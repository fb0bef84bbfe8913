//! The order a round visits its subjects in: each round starts one further along.
//!
//! Whoever runs second in a round runs right after someone else's saturation run, with that
//! load's connections still closing and its upstream connections still idle; whoever runs first
//! follows a quiet pause. With a fixed order the same subject always took the same seat, so a
//! seat's advantage read as the subject's. Rotated, with as many rounds as subjects (or a
//! multiple), every subject sits in every seat equally often, and a steady drift over the run
//! (a neighbour's build starting) falls on all of them alike.

/// `subjects` in the order round `round` visits them: rotated left by `round`.
pub(crate) fn rotated<T: Copy>(subjects: &[T], round: usize) -> impl Iterator<Item = T> + '_ {
    let start = if subjects.is_empty() { 0 } else { round % subjects.len() };
    subjects[start..].iter().chain(&subjects[..start]).copied()
}

#[cfg(test)]
mod tests {
    use super::rotated;

    #[test]
    fn every_subject_takes_every_seat_once_over_as_many_rounds() {
        let subjects = ["direct", "nginx", "aurora"];
        let orders: Vec<Vec<&str>> = (0..3).map(|round| rotated(&subjects, round).collect()).collect();
        assert_eq!(orders[0], ["direct", "nginx", "aurora"]);
        assert_eq!(orders[1], ["nginx", "aurora", "direct"]);
        assert_eq!(orders[2], ["aurora", "direct", "nginx"]);
        for seat in 0..3 {
            let mut seated: Vec<&str> = orders.iter().map(|order| order[seat]).collect();
            seated.sort_unstable();
            assert_eq!(seated, ["aurora", "direct", "nginx"], "seat {seat}");
        }
        assert_eq!(rotated(&subjects, 4).collect::<Vec<_>>(), orders[1], "round 4 is round 1 again");
        assert_eq!(rotated::<u8>(&[], 3).count(), 0);
    }
}
