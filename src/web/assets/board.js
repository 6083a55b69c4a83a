// The pipeline board's behaviour: drag a card to another column (or use its
// menu from the keyboard), pause and resume, open a lead's timeline, say why
// held emails are held, and refresh when the daemon changes something.
//
// Plain script, no build step, served by the daemon itself. Every handler is
// delegated from `document`, so the columns can be replaced wholesale on
// refresh without re-binding anything. Every POST carries the CSRF token
// from the page's <meta> tag.
'use strict';

(() => {
  const POLL_MS = 2000;
  const WHY_BATCH = 50;
  const WHY_MAX = 200;

  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const menu = document.getElementById('menu');
  const dialog = document.getElementById('timeline');
  const toast = document.getElementById('toast');

  let dragging = null; // the card being dragged
  let pending = false; // a refresh waits for the drag to end
  let asked = 0; // refresh requests sent
  let shown = 0; // the newest refresh applied
  let openLead = null; // the lead in the dialog
  let menuButton = null; // where focus returns when the menu closes

  const live = () => document.getElementById('live');
  const cardById = (id) => document.querySelector(`.card[data-id="${CSS.escape(String(id))}"]`);
  const stages = () => [...document.querySelectorAll('.column')].map((c) => c.dataset.stage);

  function say(message) {
    toast.textContent = message;
    toast.hidden = false;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { toast.hidden = true; }, 6000);
  }

  async function get(path) {
    const r = await fetch(path, { credentials: 'same-origin' });
    if (r.status === 401) {
      location.reload(); // back to the sign-in page
      throw new Error('signed out');
    }
    return r;
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) {
      location.reload();
      throw new Error('signed out');
    }
    const v = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(v.message || `request failed (${r.status})`);
    return v;
  }

  // --- refresh -------------------------------------------------------------

  function swap(html) {
    const t = document.createElement('template');
    t.innerHTML = html;
    const fresh = t.content.firstElementChild;
    if (!fresh) return;
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('.card');
    const focusId = focused && focused.dataset.id;
    const scroll = new Map([...document.querySelectorAll('.column')].map((c) => [c.dataset.stage, c.querySelector('.cards').scrollTop]));
    const x = document.getElementById('columns').scrollLeft;
    live().replaceWith(fresh);
    for (const c of document.querySelectorAll('.column')) {
      if (scroll.has(c.dataset.stage)) c.querySelector('.cards').scrollTop = scroll.get(c.dataset.stage);
    }
    document.getElementById('columns').scrollLeft = x;
    if (focusId && cardById(focusId)) cardById(focusId).focus({ preventScroll: true });
    explainHeld();
    if (openLead && dialog.open) openTimeline(openLead);
  }

  async function refresh() {
    if (dragging) {
      pending = true;
      return;
    }
    const mine = ++asked;
    const r = await get('/board/live' + location.search);
    if (!r.ok) return;
    const html = await r.text();
    if (mine < shown) return; // a newer answer is already on screen
    if (dragging) {
      pending = true;
      return;
    }
    shown = mine;
    swap(html);
  }

  async function poll() {
    try {
      const r = await get('/board/stamp');
      if (r.ok) {
        const v = await r.json();
        if (v.stamp !== live().dataset.stamp) await refresh();
      }
    } catch (_) {
      // The daemon restarting: try again at the next poll.
    }
    setTimeout(poll, POLL_MS);
  }

  // Why a due email is held, from the server's `explain`, a batch at a time.
  async function explainHeld() {
    const held = [...document.querySelectorAll('.card[data-held]')];
    for (const c of held.slice(WHY_MAX)) c.querySelector('.why').textContent = 'held: open the card to see why';
    const todo = held.slice(0, WHY_MAX).map((c) => c.dataset.id);
    for (let i = 0; i < todo.length; i += WHY_BATCH) {
      const r = await get('/board/why?ids=' + todo.slice(i, i + WHY_BATCH).join(','));
      if (!r.ok) return;
      const reasons = await r.json();
      for (const [id, text] of Object.entries(reasons)) {
        const el = cardById(id) && cardById(id).querySelector('.why');
        if (el) el.textContent = text;
      }
    }
  }

  // --- actions -------------------------------------------------------------

  async function moveCard(id, stage) {
    const card = cardById(id);
    if (!card || card.dataset.stage === stage) return;
    const target = document.querySelector(`.column[data-stage="${CSS.escape(stage)}"] .cards`);
    if (target) target.prepend(card); // at once; the refresh brings the counts
    card.dataset.stage = stage;
    try {
      await post(`/board/leads/${id}/stage`, { stage });
    } catch (e) {
      say(`Could not move the lead: ${e.message}`);
    }
    await refresh();
    // Keep the keyboard user's place, unless focus has moved on meanwhile.
    const moved = cardById(id);
    const lost = !document.activeElement || document.activeElement === document.body;
    if (moved && lost && !dialog.open) moved.focus({ preventScroll: true });
  }

  async function control(id, action) {
    try {
      await post(`/board/leads/${id}/${action}`);
    } catch (e) {
      say(`Could not ${action} the lead: ${e.message}`);
    }
    await refresh();
  }

  async function openTimeline(id) {
    let r;
    try {
      r = await get(`/board/leads/${id}`);
    } catch (_) {
      return;
    }
    if (!r.ok) {
      say('That lead is no longer on the board.');
      if (dialog.open) dialog.close();
      return;
    }
    dialog.querySelector('.dialog-body').innerHTML = await r.text();
    dialog.setAttribute('aria-labelledby', 'timeline-title');
    openLead = String(id);
    if (!dialog.open) dialog.showModal();
  }

  // --- the card menu (the keyboard's way to move, pause and resume) ----------

  function closeMenu(returnFocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    menu.replaceChildren();
    if (returnFocus && menuButton && document.contains(menuButton)) menuButton.focus();
    menuButton = null;
  }

  function openMenu(card, button) {
    const id = card.dataset.id;
    const items = [['Open timeline', () => openTimeline(id)]];
    for (const s of stages()) {
      if (s !== card.dataset.stage) items.push([`Move to ${s}`, () => moveCard(id, s)]);
    }
    if (card.dataset.state === 'active') items.push(['Pause', () => control(id, 'pause')]);
    if (card.dataset.state === 'paused') items.push(['Resume', () => control(id, 'resume')]);
    menu.replaceChildren(...items.map(([label, act]) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.setAttribute('role', 'menuitem');
      b.textContent = label;
      b.addEventListener('click', () => {
        closeMenu(false);
        act();
      });
      return b;
    }));
    menu.setAttribute('aria-label', `Actions for ${card.dataset.name}`);
    const r = button.getBoundingClientRect();
    menu.hidden = false;
    menu.style.top = `${window.scrollY + r.bottom + 4}px`;
    menu.style.left = `${Math.max(8, Math.min(window.scrollX + r.right - menu.offsetWidth, window.scrollX + innerWidth - menu.offsetWidth - 8))}px`;
    menuButton = button;
    button.setAttribute('aria-expanded', 'true');
    menu.querySelector('button').focus();
  }

  menu.addEventListener('keydown', (e) => {
    const items = [...menu.querySelectorAll('button')];
    const i = items.indexOf(document.activeElement);
    if (e.key === 'ArrowDown') items[(i + 1) % items.length].focus();
    else if (e.key === 'ArrowUp') items[(i - 1 + items.length) % items.length].focus();
    else if (e.key === 'Home') items[0].focus();
    else if (e.key === 'End') items[items.length - 1].focus();
    else if (e.key === 'Escape') closeMenu(true);
    else if (e.key === 'Tab') closeMenu(false);
    else return;
    e.preventDefault();
  });

  // --- events --------------------------------------------------------------

  document.addEventListener('click', (e) => {
    const more = e.target.closest('.more');
    if (!menu.hidden && !menu.contains(e.target)) {
      const same = more && more === menuButton;
      closeMenu(false);
      if (same) return;
    }
    if (more) {
      openMenu(more.closest('.card'), more);
      return;
    }
    const card = e.target.closest('.card');
    if (card && !menu.contains(e.target)) openTimeline(card.dataset.id);
  });

  document.addEventListener('keydown', (e) => {
    const card = e.target.classList && e.target.classList.contains('card') ? e.target : null;
    if (!card) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      openTimeline(card.dataset.id);
    } else if (e.key === 'ContextMenu' || (e.key === 'F10' && e.shiftKey)) {
      e.preventDefault();
      openMenu(card, card.querySelector('.more'));
    }
  });

  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) return dialog.close(); // the backdrop
    const b = e.target.closest('[data-action]');
    if (!b) return;
    if (b.dataset.action === 'close') dialog.close();
    else if (openLead) control(openLead, b.dataset.action);
  });

  dialog.addEventListener('close', () => {
    const c = openLead && cardById(openLead);
    openLead = null;
    if (c) c.focus({ preventScroll: true });
  });

  document.addEventListener('dragstart', (e) => {
    const card = e.target.closest && e.target.closest('.card');
    if (!card) return;
    closeMenu(false);
    dragging = card;
    card.classList.add('dragging');
    e.dataTransfer.effectAllowed = 'move';
    e.dataTransfer.setData('text/plain', card.dataset.id);
  });

  document.addEventListener('dragover', (e) => {
    const col = dragging && e.target.closest && e.target.closest('.column');
    if (!col) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'move';
    for (const c of document.querySelectorAll('.column.over')) if (c !== col) c.classList.remove('over');
    col.classList.add('over');
  });

  document.addEventListener('drop', (e) => {
    const col = dragging && e.target.closest && e.target.closest('.column');
    if (!col) return;
    e.preventDefault();
    const id = dragging.dataset.id;
    col.classList.remove('over');
    moveCard(id, col.dataset.stage);
  });

  document.addEventListener('dragend', () => {
    if (dragging) dragging.classList.remove('dragging');
    dragging = null;
    for (const c of document.querySelectorAll('.column.over')) c.classList.remove('over');
    if (pending) {
      pending = false;
      refresh();
    }
  });

  const filters = document.querySelector('.filters');
  if (filters) filters.addEventListener('change', () => filters.requestSubmit());

  explainHeld();
  setTimeout(poll, POLL_MS);
})();
