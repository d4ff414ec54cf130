#!/usr/bin/perl
# Gearman interop worker on top of Gearman::Worker (libgearman-client-perl).
# Shared CLI and output format: see tests/interop/README.md.
use strict;
use warnings;
use Getopt::Long;
use POSIX ();
use Time::HiRes ();
use Gearman::Worker;

$| = 1;
sub out { print $_[0], "\n" }

my %o = (host => "127.0.0.1", port => 4730, mode => "reverse", count => 0);
GetOptions(\%o, "host=s", "port=i", "function=s", "mode=s", "count=i") or die "bad arguments\n";
my $mode = $o{mode};

my $worker = Gearman::Worker->new(job_servers => ["$o{host}:$o{port}"]);
my $jobs = 0;
$worker->register_function($o{function} => sub {
    my $job  = shift;
    my $data = $job->arg;
    $jobs++;
    out("JOB " . $job->handle . " " . unpack("H*", $data));
    if ($mode eq "exit-midjob") {
        POSIX::_exit(0);
    }
    if ($mode eq "fail") {
        return undef;    # Gearman::Worker sends WORK_FAIL for an undef result
    }
    if ($mode eq "exception") {
        # Not die(): that sends WORK_EXCEPTION (Storable-frozen) *and* WORK_FAIL,
        # and a 1.1.20 server answers the second one with ERROR, which kills the
        # worker loop. send_work_exception() marks the job as done.
        $worker->send_work_exception($job, "boom");
        return undef;
    }
    if ($mode eq "events") {
        # Not $worker->send_work_status(): in 2.004.015 it drops the denominator and
        # sends a malformed WORK_STATUS (handle\0num), which derails a 1.1.20 server's
        # parser. Gearman::Job::set_status() builds the packet correctly.
        $job->set_status(1, 4);
        $worker->send_work_data($job, "chunk");
        $worker->send_work_warning($job, "careful");
        return scalar reverse $data;
    }
    if ($mode =~ /^sleep:(\d+)$/) {
        Time::HiRes::sleep($1 / 1000);
        return $data;
    }
    return $data if $mode eq "echo";
    return scalar reverse $data if $mode eq "reverse";
    die "unknown mode $mode\n";
});
out("READY");
$worker->work(stop_if => sub { $o{count} > 0 && $jobs >= $o{count} });
exit 0;
