"""The KSM benchmark's scenario: a class of identical guests that arrive
in waves, run, and leave.

With ``waves`` waves over ``duration`` seconds, waves arrive evenly over
the first three quarters of the run and leave, oldest first, evenly over
the last quarter (3 waves in 180 s: arrive at 0, 45, 90 s, leave at 135,
150, 165 s). Each guest is a :mod:`ksm_guest` process that looks like
QEMU; a wave's guests start in parallel, as a class's students start
them. The policy under test is told about every guest start and stop, so
the adaptive one can deliver the libvirt hook events.
"""

import dataclasses
import threading
import time
import uuid

from oslo_log import log as logging

from nova_ksm_inject import exception
from tests.lib import ksm_guest

LOG = logging.getLogger(__name__)

ARRIVE, LEAVE = 'arrive', 'leave'


class BenchFailed(exception.NovaKsmInjectError):
    msg_fmt = "The KSM benchmark failed: %(reason)s"


@dataclasses.dataclass(frozen=True)
class Event(object):
    """A wave arriving or leaving, ``time`` seconds into the run."""

    time: float
    kind: str
    wave: int


WAVES, CHURN, SHARE_NOTHING, PRESSURE, REAL_GUESTS = (
    'waves', 'churn', 'share-nothing', 'pressure', 'real-guests')
KINDS = (WAVES, REAL_GUESTS, CHURN, SHARE_NOTHING, PRESSURE)


@dataclasses.dataclass(frozen=True)
class Scenario(object):
    """What every policy is run against, identically.

    ``kind`` ``churn``: one guest arrives every ``arrive_every`` seconds
    and leaves ``lifetime`` seconds later, for the whole run; the other
    kinds arrive in ``waves`` (see the module docstring).
    """

    waves: int = 3
    guests: int = 4  # per wave
    guest_mib: int = 256
    identical: float = 0.85
    volatile: float = 0.01
    rewrite_seconds: float = 2.0
    duration: float = 180.0
    pressure: bool = False  # hold ballast memory (--long, pressure)
    kind: str = WAVES
    arrive_every: float = 10.0
    lifetime: float = 60.0
    # The share of ``duration`` over which waves arrive; the rest is for
    # leaving.
    arrivals_share: float = 0.75

    @property
    def pages_per_guest(self):
        return self.guest_mib * 1024 * 1024 // ksm_guest.PAGE_SIZE

    @property
    def identical_pages(self):
        return int(self.pages_per_guest * self.identical)

    def expected_saving(self, guests):
        """pages_sharing once ``guests`` running guests are merged."""
        return max(0, guests - 1) * self.identical_pages

    def schedule(self):
        """Every :class:`Event`, in time order."""
        if self.kind == CHURN:
            return self._churn_schedule()
        arrive_step = self.arrivals_share * self.duration / self.waves
        leave_step = (1 - self.arrivals_share) * self.duration / self.waves
        events = [Event(i * arrive_step, ARRIVE, i + 1)
                  for i in range(self.waves)]
        events += [Event(self.arrivals_share * self.duration
                         + i * leave_step, LEAVE, i + 1)
                   for i in range(self.waves)]
        return events

    def _churn_schedule(self):
        arrivals = [i * self.arrive_every for i in range(
            int(round(self.duration / self.arrive_every)))]
        events = [Event(t, ARRIVE, i + 1) for i, t in enumerate(arrivals)]
        events += [Event(t + self.lifetime, LEAVE, i + 1)
                   for i, t in enumerate(arrivals)
                   if t + self.lifetime < self.duration]
        # At the same time, the old guest leaves before the new arrives.
        return sorted(events, key=lambda e: (e.time, e.kind != LEAVE))

    @property
    def total_guests(self):
        return self.guests * len([e for e in self.schedule()
                                  if e.kind == ARRIVE])

    @property
    def peak_guests(self):
        """Most guests running at once."""
        running = peak = 0
        for event in self.schedule():
            running += self.guests if event.kind == ARRIVE else -self.guests
            peak = max(peak, running)
        return peak

    def phases(self):
        """[(wave, start, end)]: from each arrival to the next event."""
        events = self.schedule()
        ends = [e.time for e in events[1:]] + [self.duration]
        return [(event.wave, event.time, ends[i])
                for i, event in enumerate(events) if event.kind == ARRIVE]


ALL_POLICIES = ('default', 'static-max', 'ksmtuned', 'advisor', 'adaptive')
# Each scenario as the benchmark runs it by default: (scenario, policies).
PRESETS = {
    WAVES: (Scenario(), ALL_POLICIES),
    REAL_GUESTS: (Scenario(kind=REAL_GUESTS, waves=1, guests=4,
                           guest_mib=512, duration=300.0, volatile=0.0),
                  ALL_POLICIES),
    CHURN: (Scenario(kind=CHURN, waves=30, guests=1, duration=300.0,
                     arrive_every=10.0, lifetime=60.0),
            ('static-max', 'adaptive')),
    SHARE_NOTHING: (Scenario(kind=SHARE_NOTHING, waves=1, guests=4,
                             identical=0.0, duration=120.0),
                    ('static-max', 'ksmtuned', 'advisor', 'adaptive')),
    PRESSURE: (Scenario(kind=PRESSURE, pressure=True, guest_mib=384),
               ('static-max', 'ksmtuned', 'advisor', 'adaptive')),
}


@dataclasses.dataclass(frozen=True)
class Guest(object):
    """One synthetic guest, as libvirt would know it."""

    name: str
    wave: int
    tag: int
    mib: int

    @property
    def uuid(self):
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, self.name + '.bench'))

    def xml(self):
        """A minimal domain XML, as libvirt passes to its hooks."""
        return ("<domain type='kvm'><name>%s</name><uuid>%s</uuid>"
                "<memory unit='MiB'>%d</memory>"
                "<currentMemory unit='MiB'>%d</currentMemory>"
                "<vcpu>1</vcpu></domain>"
                % (self.name, self.uuid, self.mib, self.mib))


def wave_guests(scenario, wave):
    """The guests of ``wave`` (1-based); tags are unique over the run."""
    return [Guest(name='bench-w%d-g%d' % (wave, i + 1), wave=wave,
                  tag=(wave - 1) * scenario.guests + i + 1,
                  mib=scenario.guest_mib)
            for i in range(scenario.guests)]


class ScenarioRunner(object):
    """Plays the schedule against one policy; records what happened."""

    def __init__(self, scenario, launcher, policy, clock=time.monotonic):
        self.scenario = scenario
        self.launcher = launcher
        self.policy = policy
        self.clock = clock
        self.log = []  # [{time, kind, wave, done}] seconds since t0
        self.t0 = None
        self.threads = []

    def run(self, t0, stop):
        """Play every event from ``t0``; ``stop`` is a threading.Event."""
        self.t0 = t0
        for event in self.scenario.schedule():
            if stop.wait(max(0.0, t0 + event.time - self.clock())):
                return
            started = self.clock() - t0
            guests = wave_guests(self.scenario, event.wave)
            action = self._arrive if event.kind == ARRIVE else self._leave
            self._parallel(action, guests)
            self.log.append({'time': started, 'kind': event.kind,
                             'wave': event.wave,
                             'done': self.clock() - t0})
            LOG.info('Wave %d %s at %.1f s (done at %.1f s)', event.wave,
                     'arrived' if event.kind == ARRIVE else 'left',
                     started, self.log[-1]['done'])
        stop.wait(max(0.0, t0 + self.scenario.duration - self.clock()))

    def arrive(self, wave):
        """Start every guest of ``wave`` now, in parallel."""
        self._parallel(self._arrive, wave_guests(self.scenario, wave))

    def _arrive(self, guest):
        self.policy.guest_starting(guest)
        self.launcher.spawn(guest)
        self.policy.guest_started(guest)
        self.launcher.wait_ready(guest.name)

    def _leave(self, guest):
        self.launcher.stop(guest.name)
        self.policy.guest_stopped(guest)

    def join(self, timeout=60.0):
        """Wait for guest starts and stops still running (interrupted)."""
        for thread in self.threads:
            thread.join(timeout)

    def _parallel(self, action, guests):
        errors = []

        def call(guest):
            try:
                action(guest)
            except Exception as err:  # re-raised in the caller below
                errors.append(err)

        threads = [threading.Thread(target=call, args=(g,)) for g in guests]
        self.threads = threads
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
