<?php
// ticket-ai.php — the PHP-FPM peer of Parley's GET /api/tickets/{id}/ai, for
// bench/http-bench.sh. It does what fcgi/api_tickets.c h_ticket_ai_get does,
// the way a plain PHP application would: open the SQLite database with PDO,
// prepare the same SELECTs (the cached answer of the ticket; only when there
// is none, the running job on its channel), and print the same JSON with the
// same headers.
//
//   GET /ticket-ai.php?id=TICKET            a new PDO connection per request
//   GET /ticket-ai.php?id=TICKET&persist=1  PDO::ATTR_PERSISTENT: the worker
//                                           keeps its connection (the best
//                                           case for PHP)
// The database path comes from the pool's env[PARLEY_DB].

$id = isset($_GET['id']) ? (string)$_GET['id'] : '';
function reply(int $status, array $body): void
{
    $text = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    http_response_code($status);
    header('Content-Type: application/json');
    header('Content-Length: ' . strlen($text));
    header('Vary: Origin');
    header('X-Content-Type-Options: nosniff');
    echo $text;
}

if (!preg_match('/^[A-Za-z0-9._-]{1,64}$/D', $id)) {
    reply(400, ['success' => false,
                'message' => "Invalid ticket id: use 1-64 letters, digits, '-', '_' or '.'"]);
    exit;
}
try {
    $db = new PDO('sqlite:' . getenv('PARLEY_DB'), null, null, [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_TIMEOUT => 5,                      // busy timeout, seconds
        PDO::ATTR_PERSISTENT => !empty($_GET['persist']),
    ]);
    $answer = $db->prepare('SELECT response FROM answers WHERE ticket_id = ? '
                           . 'ORDER BY created_at DESC LIMIT 1');
    $answer->execute([$id]);
    $response = $answer->fetchColumn();
    $answer->closeCursor();
    $running = false;
    if ($response === false) {
        // like parley: the running job only matters without a cached answer
        $job = $db->prepare("SELECT id, first_seq FROM jobs WHERE channel = ? AND state = 'running' "
                            . 'ORDER BY id DESC LIMIT 1');
        $job->execute(['ticket:' . $id]);
        $running = $job->fetch(PDO::FETCH_NUM) !== false;
        $job->closeCursor();
    }
} catch (PDOException $e) {
    error_log('ticket-ai.php: ' . $e->getMessage());
    reply(500, ['success' => false, 'message' => 'Database error']);
    exit;
}
$cached = $response !== false;
reply(200, [
    'ticketId' => $id,
    'exists' => $cached || $running,
    'status' => $cached ? 'cached' : ($running ? 'running' : 'none'),
    'response' => $cached ? $response : null,
]);
