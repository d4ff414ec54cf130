#!/usr/bin/perl
# Gearman interop client on top of Gearman::Client (libgearman-client-perl).
# Shared CLI and output format: see tests/interop/README.md.
use strict;
use warnings;
use Getopt::Long;
use Gearman::Client;

$| = 1;
sub out { print $_[0], "\n" }

my %o = (host => "127.0.0.1", port => 4730, priority => "normal", timeout => 60);
GetOptions(\%o, "host=s", "port=i", "function=s", "background", "priority=s", "unique=s",
    "data-hex=s", "data-file=s", "exceptions", "status-of=s", "timeout=f")
    or die "bad arguments\n";

my $server = "$o{host}:$o{port}";
my $client = Gearman::Client->new(
    job_servers => [$server],
    exceptions  => $o{exceptions} ? 1 : 0,
);

# Gearman::Client handles are "ip:port//server-handle"; print only the server part.
sub shandle { my $h = shift; $h =~ s{^.*//}{}; return $h }

if (defined $o{"status-of"}) {
    my $st = $client->get_status("$server//" . $o{"status-of"});
    if (!$st) {
        # get_status() returns undef for an unknown handle (known=0).
        out("JOBSTATUS 0 0 0/0");
        exit 0;
    }
    my ($num, $den) = ($st->[2] // 0, $st->[3] // 0);
    out(sprintf("JOBSTATUS %d %d %d/%d", $st->known ? 1 : 0, $st->running ? 1 : 0, $num, $den));
    exit 0;
}

my $data;
if (defined $o{"data-file"}) {
    open(my $fh, "<:raw", $o{"data-file"}) or die "open: $!\n";
    local $/;
    $data = <$fh>;
    $data = "" unless defined $data;
    close $fh;
} else {
    $data = pack("H*", $o{"data-hex"} // "");
}

my %task_opts = (priority => $o{priority});
$task_opts{uniq} = $o{unique} if defined $o{unique};

if ($o{background}) {
    my $h = $client->dispatch_background($o{function}, \$data, \%task_opts);
    if (!$h) { out("ERROR dispatch_background"); exit 1 }
    out("CREATED " . shandle($h));
    exit 0;
}

my $done = 0;
my $task = Gearman::Task->new($o{function}, \$data, {
    %task_opts,
    on_data      => sub { out("DATA " . unpack("H*", ${ $_[0] })) },
    on_warning   => sub { out("WARNING " . unpack("H*", ${ $_[0] })) },
    on_status    => sub { out("STATUS $_[0]/$_[1]") },
    on_complete  => sub { out("COMPLETE " . unpack("H*", ${ $_[0] })); $done = 1 },
    on_fail      => sub { out("FAIL"); $done = 1 },
    # Gearman::Taskset wraps the payload with Storable::freeze and Task::exception
    # thaws it again, so the callback receives the raw bytes.
    on_exception => sub { out("EXCEPTION " . unpack("H*", $_[0])); $done = 1 },
});
my $ts = $client->new_task_set;
my $h = $ts->add_task($task);
if (!$h) { out("ERROR add_task"); exit 1 }
out("CREATED " . shandle($h));
$ts->wait(timeout => $o{timeout});
exit($done ? 0 : 1);
