/* muc-eventsource live view (/view/<room>): one EventSource, messages appended as text.
   Every string from the stream goes into the page with textContent, never as HTML. */
'use strict';
(function () {
  var MAX = 400; // messages kept on the page (a wall display runs for weeks)
  var STATUS = {
    joined: '',
    reconnecting: 'reconnecting to the chat server…',
    rejoining: 'rejoining the room…',
    unavailable: 'room unavailable',
    banned: 'banned from the room',
    destroyed: 'room destroyed',
    removed: 'room no longer served here',
    forbidden: 'access withdrawn: this room is no longer open to this page',
    shutdown: 'server restarting…'
  };
  // Statuses after which the stream ends for good: the page stops instead of retrying.
  var FINAL = { forbidden: true, removed: true, destroyed: true };
  var d = document, body = d.body, room = body.getAttribute('data-room') || '';
  var log = d.getElementById('log'), subject = d.getElementById('subject');
  var state = d.getElementById('state'), banner = d.getElementById('banner');
  var kiosk = body.classList.contains('kiosk');
  var params = new URLSearchParams(location.search);
  var token = params.get('token');
  var history = params.get('history');
  if (!/^[0-9]{1,4}$/.test(history || '')) history = '50';
  var es = null, conn = 'connecting';
  // The room's state when the page was rendered, until the stream's status events say more.
  var status = body.getAttribute('data-status') || '', reason = body.getAttribute('data-reason') || '';
  var lastId = '', burstUntil = 0, retry = 2000, timer = 0, ended = false;
  var seen = new Map(); // event id -> message element (de-duplication, corrections)

  if (token) {
    var home = d.getElementById('home');
    if (home) home.href = '../?token=' + encodeURIComponent(token);
  }

  function url() {
    var q = new URLSearchParams();
    if (token) q.set('token', token);
    // EventSource's own reconnects send Last-Event-ID (which wins over history); a new
    // EventSource after the browser gave up resumes by id in the query instead.
    if (lastId) q.set('lastEventId', lastId); else q.set('history', history);
    return '../eventsource/' + encodeURIComponent(room) + '?' + q.toString();
  }

  function render() {
    var text = 'live', cls = 'live';
    if (ended) { text = STATUS[status] || status; cls = 'down'; }
    else if (conn === 'connecting') { text = 'connecting…'; cls = 'connecting'; }
    else if (conn === 'reconnecting') { text = 'reconnecting…'; cls = 'reconnecting'; }
    else if (conn === 'down') { text = 'disconnected, retrying…'; cls = 'down'; }
    else if (status && status !== 'joined') {
      text = STATUS[status] || status;
      cls = status === 'reconnecting' || status === 'rejoining' || status === 'shutdown'
        ? 'reconnecting' : 'down';
    }
    state.textContent = text;
    state.className = cls;
    var show = cls === 'reconnecting' || cls === 'down';
    banner.textContent = show ? text + (reason && (conn === 'live' || ended) ? ' (' + reason + ')' : '') : '';
    banner.className = show ? 'show ' + cls : '';
    body.setAttribute('data-state', cls);
  }

  function json(e) {
    try { var v = JSON.parse(e.data); return v && typeof v === 'object' ? v : null; }
    catch (err) { return null; }
  }

  // The id this event carries, or '' when it has none (lastEventId then repeats the last one).
  function ownId(e) {
    var id = e.lastEventId || '';
    if (!id || id === lastId) return '';
    lastId = id;
    return id;
  }

  function hue(s) {
    var h = 0;
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 360;
    return h;
  }

  function atBottom() {
    return kiosk || log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }

  function append(el) {
    var stick = atBottom();
    log.appendChild(el);
    while (log.childElementCount > MAX) {
      var old = log.firstElementChild;
      if (old.dataset.id) seen.delete(old.dataset.id);
      if (old.dataset.orig) seen.delete(old.dataset.orig);
      log.removeChild(old);
    }
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function message(m, id) {
    var row = d.createElement('div');
    row.className = 'msg';
    var time = d.createElement('time');
    var now = new Date();
    if (Date.now() >= burstUntil) {
      time.dateTime = now.toISOString();
      time.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    } else {
      // The burst that follows (re)connecting is history or what was missed, sent at times
      // the stream does not carry: better no time than a wrong one.
      burstUntil = Date.now() + 100;
      time.className = 'earlier';
      time.title = 'sent before this page connected';
    }
    var nick = d.createElement('span');
    nick.className = 'nick';
    if (typeof m.nick === 'string') {
      nick.textContent = m.nick;
      nick.style.setProperty('--h', String(hue(m.nick)));
    } else {
      row.className += ' room';
      nick.textContent = '*';
    }
    var text = d.createElement('span');
    text.className = 'body';
    text.textContent = String(m.body);
    row.appendChild(time);
    row.appendChild(nick);
    row.appendChild(text);
    if (id) { row.dataset.id = id; seen.set(id, row); }
    return row;
  }

  function note(text) {
    var p = d.createElement('div');
    p.className = 'note';
    p.textContent = text;
    append(p);
  }

  function connect() {
    timer = 0;
    es = new EventSource(url());
    es.onopen = function () {
      conn = 'live';
      retry = 2000;
      burstUntil = Date.now() + 300;
      render();
    };
    es.onerror = function () {
      if (ended) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (a status other than 200, e.g. 503 when full): try again later.
        conn = 'down';
        es.close();
        if (!timer) timer = setTimeout(connect, retry);
        retry = Math.min(retry * 2, 60000);
      } else {
        conn = 'reconnecting';
      }
      render();
    };
    es.onmessage = function (e) {
      var id = ownId(e), m = json(e);
      if (!m || typeof m.body !== 'string' || (id && seen.has(id))) return;
      append(message(m, id));
      // Messages flow: whatever kept the room away is over (its `joined` may have left the ring).
      if (status !== 'joined' && status !== 'destroyed' && status !== 'banned' && status) {
        status = '';
        reason = '';
        render();
      }
    };
    es.addEventListener('subject', function (e) {
      ownId(e);
      var m = json(e);
      if (!m || typeof m.subject !== 'string') return;
      subject.textContent = m.subject;
      d.title = (m.subject || room) + ' · ' + room;
    });
    es.addEventListener('status', function (e) {
      ownId(e);
      var m = json(e);
      if (!m || typeof m.status !== 'string') return;
      status = m.status;
      reason = typeof m.reason === 'string' ? m.reason : '';
      if (FINAL[status]) {
        // The server ends the stream: reconnecting would only be refused. Say so and stop.
        ended = true;
        es.close();
        if (timer) { clearTimeout(timer); timer = 0; }
        note(STATUS[status] + (reason ? ' (' + reason + ')' : '') + '. Reload the page to try again.');
      }
      render();
    });
    es.addEventListener('gap', function (e) {
      var m = json(e);
      note('Some messages may be missing' +
        (m && typeof m.reason === 'string' ? ': ' + m.reason : '.'));
    });
    es.addEventListener('correction', function (e) {
      // {"id": the corrected message's event id (when still held), "nick", "body", "replaces"}
      var id = ownId(e), m = json(e);
      if (!m || typeof m.body !== 'string') return;
      var target = typeof m.id === 'string' && seen.get(m.id);
      if (target) {
        target.querySelector('.body').textContent = m.body;
        target.classList.add('edited');
      } else {
        // The original is not on the page (sent before it connected): show the new text, and
        // let a later retraction of the original find it.
        var row = message(m, id);
        row.classList.add('edited');
        if (typeof m.id === 'string') { row.dataset.orig = m.id; seen.set(m.id, row); }
        append(row);
      }
    });
    es.addEventListener('retraction', function (e) {
      // {"id": the retracted message's event id, "moderated", "reason"}
      ownId(e);
      var m = json(e);
      var target = m && typeof m.id === 'string' && seen.get(m.id);
      if (!target) return;
      target.querySelector('.body').textContent =
        m.moderated ? 'message removed by a moderator' : 'message removed';
      target.classList.add('retracted');
    });
  }

  render();
  connect();
})();
