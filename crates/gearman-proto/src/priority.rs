//! Job priority, shared by the engine, the persistent stores and the client library.

use crate::Command;

/// Job priority, numbered as gearmand numbers it (0 = high), which is also how the
/// persistent stores keep it. Gearman orders jobs by priority only within one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Priority {
    /// `SUBMIT_JOB_HIGH*`: taken before normal and low jobs of the same function.
    High = 0,
    /// `SUBMIT_JOB*`: the default.
    #[default]
    Normal = 1,
    /// `SUBMIT_JOB_LOW*`: taken last.
    Low = 2,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Queue index (0 = high).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The number gearmand stores for this priority.
    pub fn as_i64(self) -> i64 {
        self as i64
    }

    /// Reads a stored priority; `None` for anything but 0, 1 and 2.
    pub fn from_i64(n: i64) -> Option<Priority> {
        match n {
            0 => Some(Priority::High),
            1 => Some(Priority::Normal),
            2 => Some(Priority::Low),
            _ => None,
        }
    }

    /// The submit command for a job of this priority (background or not).
    pub fn submit_command(self, background: bool) -> Command {
        match (self, background) {
            (Priority::Normal, false) => Command::SubmitJob,
            (Priority::Normal, true) => Command::SubmitJobBg,
            (Priority::High, false) => Command::SubmitJobHigh,
            (Priority::High, true) => Command::SubmitJobHighBg,
            (Priority::Low, false) => Command::SubmitJobLow,
            (Priority::Low, true) => Command::SubmitJobLowBg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Priority;

    #[test]
    fn numbers_round_trip_and_order_highest_first() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_i64(p.as_i64()), Some(p));
            assert_eq!(p.index() as i64, p.as_i64());
        }
        assert_eq!(Priority::from_i64(3), None);
        assert_eq!(Priority::from_i64(-1), None);
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
    }
}
