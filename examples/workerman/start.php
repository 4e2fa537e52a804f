<?php
/**
 * A Workerman WebSocket chat (echo + broadcast) that registers itself with tideway.
 *
 *   composer require workerman/workerman
 *   TIDEWAY_ADMIN=http://10.0.0.1:9090 \
 *   TIDEWAY_REGISTER_TOKEN=... \
 *   TIDEWAY_ADVERTISE=10.0.0.5:2346 \
 *   php start.php start
 *
 * Environment:
 *   TIDEWAY_ADMIN            tideway's admin API base URL (required to register)
 *   TIDEWAY_REGISTER_TOKEN   the register token (required to register; never printed)
 *   TIDEWAY_ADVERTISE        the ip:port tideway should connect to; it must reach this
 *                            server's 2346 (default 127.0.0.1:2346)
 *   TIDEWAY_UPSTREAM         tideway upstream to join (default "app")
 *   TIDEWAY_ID               registration id (default hostname-port, see below)
 *   TIDEWAY_TTL              registration TTL in seconds (default 30; heartbeat every TTL/3)
 *   TIDEWAY_DRAIN_WAIT       how long onWorkerStop waits for the drain (default "30s")
 *   TIDEWAY_SECRET_FILE      where the registration's secret is kept (mode 0600), default
 *                            .tideway-<id>.secret beside this file (a directory only this
 *                            user may write to; on a read-only root filesystem, point it at a
 *                            writable volume, e.g. an emptyDir at /run/tideway). The process a
 *                            reload starts reads it and refreshes the same registration; so
 *                            does a process 0 that replaces one that died without
 *                            deregistering (a fatal error, a SIGKILL). Without a readable
 *                            file, such a process is refused (403, "not made with this
 *                            secret") until the old registration lapses, and retries every beat
 *   WORKERMAN_RUN_DIR        where Workerman keeps its pid, log and status files (default: its
 *                            own, under vendor/); a writable directory on a read-only root
 *                            filesystem (`php start.php reload -g` must see the same one)
 * Without TIDEWAY_ADMIN or TIDEWAY_REGISTER_TOKEN the server runs without registering.
 *
 * One registration per listening address. All `count` processes of a Worker serve the same
 * ip:port: without reusePort they accept on one socket the master opened before forking; with
 * reusePort each opens its own socket on the same port and the kernel spreads connections.
 * Either way tideway sees one backend (one address), so only worker id 0 registers, heartbeats,
 * drains and deregisters it; registering from every process would either collide on the
 * address or multiply its weight. The id is therefore hostname-port, without a worker id.
 *
 * Reloading (`php start.php reload`, `reload -g`) is not stopping. Workerman 4.x runs
 * onWorkerReload in each worker process just before it stops it for a reload (see the helper's
 * header for where in Worker.php); this file notes it, and onWorkerStop then ends nothing:
 * process 0 neither drains nor deregisters, its heartbeat goes on while it lives (after
 * `reload -g` it keeps serving its open connections until they end), the secret file stays,
 * and the new process 0 reads it and refreshes the same registration (200). tideway keeps the
 * backend and cuts no connection. Only a stop drains. Workerman 4.2.1 reloads the processes
 * one at a time and, after `reload -g`, starts a process's replacement only once the old one
 * has exited, that is once its connections ended; until then the old one serves them and
 * heartbeats, the others accept. A stop that comes meanwhile would make Workerman exit such
 * an old process at once, cutting its connections: onWorkerReload therefore takes over its
 * stop signals, to wait for tideway's drain first (process 0 then deregisters).
 *
 * Stopping: onWorkerStop runs when a process stops, before Workerman closes its listener and
 * connections. Process 0 drains there: tideway sends the address no new connections, and the
 * call blocks this process (its event loop serves nothing meanwhile) until tideway holds no
 * connection to the address or TIDEWAY_DRAIN_WAIT ends; then it deregisters. Open WebSocket
 * connections end when their clients leave or when tideway closes them with 1001 (going away)
 * at the upstream's drain_timeout, so a drain_timeout below TIDEWAY_DRAIN_WAIT on the tideway
 * side bounds the wait and sends every client its 1001. The other processes hold
 * connections to the same address, and a (non-graceful) stop closes them right after
 * onWorkerStop: so they wait for the same drain (with the secret file's secret) before they
 * return, and their clients get tideway's 1001 too rather than a cut. Workerman's master
 * SIGKILLs a process that has not exited `Worker::$stopTimeout` seconds after a
 * (non-graceful) stop, so that is set above the drain wait below (and a Kubernetes pod's
 * terminationGracePeriodSeconds above that); a process killed mid-drain leaves its
 * registration to lapse when its TTL ends. With a graceful stop (`php start.php stop -g`)
 * Workerman keeps serving open connections after onWorkerStop returns, so there the drain
 * does not wait ("0s"): tideway stops sending new connections, and the deregistration removes
 * the backend once tideway holds no connection to it.
 */

use Workerman\Events\EventInterface;
use Workerman\Worker;

require_once __DIR__ . '/vendor/autoload.php';
require_once __DIR__ . '/TidewayRegistration.php';

const LISTEN_PORT = 2346;

$env = static function (string $name, string $default = ''): string {
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
};

$drainWait = $env('TIDEWAY_DRAIN_WAIT', '30s');
// Seconds in the drain wait ("30s", "2m", "500ms"): the stop timeout must outlast it.
$drainSeconds = 30;
if (preg_match('/^(\d+)(ms|s|m|h)?$/', trim($drainWait), $m)) {
    $factor = ['ms' => 0.001, 's' => 1, 'm' => 60, 'h' => 3600][$m[2] ?? 's'] ?? 1;
    $drainSeconds = (int)ceil((int)$m[1] * $factor);
}
Worker::$stopTimeout = $drainSeconds + 10;
$runDir = $env('WORKERMAN_RUN_DIR');
if ($runDir !== '') {
    Worker::$pidFile = "$runDir/workerman.pid";
    Worker::$logFile = "$runDir/workerman.log";
    Worker::$statusFile = "$runDir/workerman.status";
}

$worker = new Worker('websocket://0.0.0.0:' . LISTEN_PORT);
$worker->name = 'chat';
$worker->count = 4;
// $worker->reusePort = true;   // either way: one address, one registration (see above)

/** @var TidewayRegistration|null $registration */
$registration = null;
/** @var bool whether this process stops for a reload (onWorkerReload ran) */
$reloading = false;

$id = $env('TIDEWAY_ID', gethostname() . '-' . LISTEN_PORT);
$enabled = $env('TIDEWAY_ADMIN') !== '' && $env('TIDEWAY_REGISTER_TOKEN') !== '';
/** The registration of this address, as every process of the Worker names it. */
$registrationOf = static function () use ($env, $id): TidewayRegistration {
    return TidewayRegistration::fromEnv([
        'addr' => $env('TIDEWAY_ADVERTISE', '127.0.0.1:' . LISTEN_PORT),
        'id' => $id,
        // A directory only this user can write to (not a shared /tmp): the secret must stay ours.
        'secret_file' => $env('TIDEWAY_SECRET_FILE', __DIR__ . "/.tideway-$id.secret"),
        'log' => static function (string $event, string $detail) {
            // Event names and statuses only: the token and the secret never reach the log.
            Worker::log("tideway $event $detail");
        },
    ]);
};

$worker->onWorkerStart = function (Worker $w) use (&$registration, $enabled, $registrationOf) {
    if ($w->id !== 0) {
        return; // one registration per address, held by process 0
    }
    if (!$enabled) {
        Worker::log('tideway: TIDEWAY_ADMIN or TIDEWAY_REGISTER_TOKEN unset; not registering');
        return;
    }
    $registration = $registrationOf();
    // Registers now (after a reload: refreshes the registration the old process 0 kept),
    // then heartbeats on a \Workerman\Timer; a failed first registration is retried on every beat.
    $registration->start();
};

// Runs in every worker process on `reload` (SIGUSR1) and `reload -g` (SIGUSR2), just before
// Workerman stops a reloadable one; never on a stop.
$worker->onWorkerReload = function (Worker $w) use (&$registration, &$reloading, $enabled, $registrationOf, $drainWait) {
    if (!$w->reloadable) {
        return; // not stopped by a reload: a later onWorkerStop is a real stop
    }
    $reloading = true;
    if ($registration !== null) {
        $registration->reloading();
    }
    if (!$enabled || !Worker::getGracefulStop()) {
        return;
    }
    // `reload -g`: this process lives on, serving the connections it has, until they end.
    // Workerman's own handler for a stop signal would now exit at once and cut them: a stop
    // (`php start.php stop`, SIGINT from the master; SIGTERM) first waits for tideway's drain
    // (each client gets its 1001), and process 0 then deregisters.
    $stopAfterReload = static function (int $signal) use (&$registration, $registrationOf, $drainWait) {
        if ($registration !== null) {
            $registration->reloading(false);
            $registration->stop($drainWait);
            $registration = null;
        } else {
            $registrationOf()->drain($drainWait);
        }
        Worker::signalHandler($signal);
    };
    foreach ([SIGINT, SIGTERM, SIGHUP] as $signal) {
        Worker::$globalEvent->add($signal, EventInterface::EV_SIGNAL, $stopAfterReload);
    }
};

$worker->onWorkerStop = function (Worker $w) use (&$registration, &$reloading, $enabled, $registrationOf, $drainWait) {
    if ($reloading || !$enabled) {
        // A reload: the registration stays for the next process 0 (stop() ends nothing).
        if ($registration !== null) {
            $registration->stop();
        }
        return;
    }
    $graceful = method_exists(Worker::class, 'getGracefulStop') && Worker::getGracefulStop();
    if ($registration !== null) {
        $registration->stop($graceful ? '0s' : $drainWait);
        $registration = null;
        return;
    }
    if (!$graceful) {
        // Not process 0: wait for the same drain before Workerman closes this process's
        // connections, so that tideway closes them with 1001 first.
        $registrationOf()->drain($drainWait);
    }
};

$worker->onMessage = function ($connection, $data) use ($worker) {
    if ($data === 'id') {
        $connection->send(gethostname() . '-' . LISTEN_PORT . '#' . $worker->id);
        return;
    }
    // Echo to the sender, and broadcast to the others on this process.
    foreach ($worker->connections as $c) {
        $c->send($data);
    }
};

Worker::runAll();
