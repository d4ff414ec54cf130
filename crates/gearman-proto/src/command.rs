//! The packet-type table: wire codes with the spec's names, and how each body is laid out.

/// Who may send a packet type (as PROTOCOL.md section 2 records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Sent by clients and/or workers to the server.
    Peer,
    /// Sent only by the server.
    Server,
    /// Sent by workers to the server, and forwarded by the server to clients.
    Both,
    /// Defined but never valid from a peer (type 5, ALL_YOURS, SUBMIT_JOB_SCHED).
    Rejected,
}

/// How a command's body splits into arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgLayout {
    /// Number of arguments, the opaque data tail included when `has_data` is set.
    pub argc: usize,
    /// Whether the last argument is an opaque data tail that follows `argc - 1`
    /// NUL-terminated arguments (and may itself contain NULs).
    pub has_data: bool,
}

macro_rules! commands {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $argc:literal, $data:literal, $sender:ident; )*) => {
        /// A packet type (the 32-bit code in the header), named as in PROTOCOL.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Command {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Command {
            /// Every command, in code order.
            pub const ALL: &'static [Command] = &[$(Command::$variant),*];

            /// The command for a wire code, or `None` for 0 and codes above 42.
            pub fn from_code(code: u32) -> Option<Command> {
                match code {
                    $( $code => Some(Command::$variant), )*
                    _ => None,
                }
            }

            /// The wire code.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The spec's upper-case name, e.g. `SUBMIT_JOB_BG`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Command::$variant => $name, )*
                }
            }

            /// How the body splits into arguments.
            pub fn layout(self) -> ArgLayout {
                match self {
                    $( Command::$variant => ArgLayout { argc: $argc, has_data: $data }, )*
                }
            }

            /// Whether a client or worker may legitimately send this type.
            pub fn is_from_peer(self) -> bool {
                matches!(self.sender(), Sender::Peer | Sender::Both)
            }

            /// Who may send this packet type.
            pub fn sender(self) -> Sender {
                match self {
                    $( Command::$variant => Sender::$sender, )*
                }
            }
        }
    };
}

commands! {
    /// Worker registers a function.
    CanDo = 1, "CAN_DO", 1, false, Peer;
    /// Worker unregisters a function.
    CantDo = 2, "CANT_DO", 1, false, Peer;
    /// Worker unregisters every function.
    ResetAbilities = 3, "RESET_ABILITIES", 0, false, Peer;
    /// Worker is about to sleep until NOOP.
    PreSleep = 4, "PRE_SLEEP", 0, false, Peer;
    /// Unused code 5.
    Unused = 5, "UNUSED", 0, false, Rejected;
    /// Server wakes a sleeping worker.
    Noop = 6, "NOOP", 0, false, Server;
    /// Foreground job, normal priority.
    SubmitJob = 7, "SUBMIT_JOB", 3, true, Peer;
    /// Server gives the handle of a submitted job.
    JobCreated = 8, "JOB_CREATED", 1, false, Server;
    /// Worker asks for a job.
    GrabJob = 9, "GRAB_JOB", 0, false, Peer;
    /// Server has no job for the worker.
    NoJob = 10, "NO_JOB", 0, false, Server;
    /// Server hands a job to a worker.
    JobAssign = 11, "JOB_ASSIGN", 3, true, Server;
    /// Worker reports progress (forwarded to clients).
    WorkStatus = 12, "WORK_STATUS", 3, false, Both;
    /// Worker reports success with the result (forwarded to clients).
    WorkComplete = 13, "WORK_COMPLETE", 2, true, Both;
    /// Worker reports failure (forwarded to clients).
    WorkFail = 14, "WORK_FAIL", 1, false, Both;
    /// Client asks for a job's status by handle.
    GetStatus = 15, "GET_STATUS", 1, false, Peer;
    /// Echo request.
    EchoReq = 16, "ECHO_REQ", 1, true, Peer;
    /// Echo response.
    EchoRes = 17, "ECHO_RES", 1, true, Server;
    /// Background job, normal priority.
    SubmitJobBg = 18, "SUBMIT_JOB_BG", 3, true, Peer;
    /// Server error: code and text.
    Error = 19, "ERROR", 2, false, Server;
    /// Answer to GET_STATUS.
    StatusRes = 20, "STATUS_RES", 5, false, Server;
    /// Foreground job, high priority.
    SubmitJobHigh = 21, "SUBMIT_JOB_HIGH", 3, true, Peer;
    /// Connection sets its id (shown by the `workers` admin command).
    SetClientId = 22, "SET_CLIENT_ID", 1, false, Peer;
    /// Worker registers a function with a timeout in milliseconds.
    CanDoTimeout = 23, "CAN_DO_TIMEOUT", 2, false, Peer;
    /// Not implemented by gearmand.
    AllYours = 24, "ALL_YOURS", 0, false, Rejected;
    /// Worker reports an exception (forwarded to clients that asked for exceptions).
    WorkException = 25, "WORK_EXCEPTION", 2, true, Both;
    /// Connection sets an option.
    OptionReq = 26, "OPTION_REQ", 1, false, Peer;
    /// Server accepts an option.
    OptionRes = 27, "OPTION_RES", 1, false, Server;
    /// Worker sends partial data (forwarded to clients).
    WorkData = 28, "WORK_DATA", 2, true, Both;
    /// Worker sends a warning (forwarded to clients).
    WorkWarning = 29, "WORK_WARNING", 2, true, Both;
    /// Worker asks for a job and its unique key.
    GrabJobUniq = 30, "GRAB_JOB_UNIQ", 0, false, Peer;
    /// Server hands a job with its unique key.
    JobAssignUniq = 31, "JOB_ASSIGN_UNIQ", 4, true, Server;
    /// Background job, high priority.
    SubmitJobHighBg = 32, "SUBMIT_JOB_HIGH_BG", 3, true, Peer;
    /// Foreground job, low priority.
    SubmitJobLow = 33, "SUBMIT_JOB_LOW", 3, true, Peer;
    /// Background job, low priority.
    SubmitJobLowBg = 34, "SUBMIT_JOB_LOW_BG", 3, true, Peer;
    /// Cron-style job; gearmand rejects it.
    SubmitJobSched = 35, "SUBMIT_JOB_SCHED", 8, true, Rejected;
    /// Background job that runs at an epoch time.
    SubmitJobEpoch = 36, "SUBMIT_JOB_EPOCH", 4, true, Peer;
    /// Foreground map/reduce job.
    SubmitReduceJob = 37, "SUBMIT_REDUCE_JOB", 5, true, Peer;
    /// Background map/reduce job.
    SubmitReduceJobBackground = 38, "SUBMIT_REDUCE_JOB_BACKGROUND", 5, true, Peer;
    /// Worker asks for a job with unique key and reducer.
    GrabJobAll = 39, "GRAB_JOB_ALL", 0, false, Peer;
    /// Server hands a job with unique key and reducer.
    JobAssignAll = 40, "JOB_ASSIGN_ALL", 5, true, Server;
    /// Client asks for a job's status by unique key.
    GetStatusUnique = 41, "GET_STATUS_UNIQUE", 1, false, Peer;
    /// Answer to GET_STATUS_UNIQUE.
    StatusResUnique = 42, "STATUS_RES_UNIQUE", 6, false, Server;
}

impl Command {
    /// A worker's result whose last argument is data for the job's clients:
    /// WORK_COMPLETE, WORK_DATA, WORK_WARNING, WORK_EXCEPTION.
    pub fn carries_result_data(self) -> bool {
        matches!(
            self,
            Command::WorkComplete | Command::WorkData | Command::WorkWarning | Command::WorkException
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_cover_1_to_42() {
        assert_eq!(Command::ALL.len(), 42);
        for (i, c) in Command::ALL.iter().enumerate() {
            assert_eq!(c.code() as usize, i + 1);
            assert_eq!(Command::from_code(c.code()), Some(*c));
        }
        assert_eq!(Command::from_code(0), None);
        assert_eq!(Command::from_code(43), None);
    }
}
