/*
 * shmq.pml: a SPIN model of the slot state machine and the member-row lifecycle.
 *
 * docs/model.md says what each process stands for, which C++ function each step
 * mirrors, the properties, the bounds and how to run it. In short: NP producers, NC
 * consumers and NW watchdogs share a ring of NS slots and a member table of NR rows. A
 * member may crash instead of any step, and any process may stall between any two steps
 * (that is interleaving). A watchdog may judge any active or joining member dead at any
 * time (heartbeat liveness: an eviction), and the evicted member goes on with the step it
 * was at. When every member has ended and every watchdog stopped, init runs a last
 * watchdog that never crashes, three ticks, and checks the end state.
 *
 * Switches (spin -DNAME=VALUE; the defaults are the design that verifies):
 *   FENCE         1: every member CAS expects (its row, its tag) and the orphan rule
 *                 compares a slot's tag with its row's generation. 0: both checks removed
 *                 (tags are still written; nobody compares them). FENCE_CAS and
 *                 FENCE_ORPHAN switch each check alone.
 *   RECLAIM_ANY_TAG  1: a watchdog reclaiming the leaving row word x it read takes back
 *                 every slot owned by x's row, whatever its tag. 0: only slots whose tag
 *                 is x's generation; other tags are left to the orphan rule.
 *   JOIN_CAS      1: joining(g) -> active(g) is a CAS; a member whose row was judged dead
 *                 while it joined gives up. 0: a plain store.
 *   ROW_FREE_CAS  1: leaving(g) -> free(g) is a CAS. 0: a plain store.
 *   GRACE         1: a quarantined claim is released only once its producer is past its
 *                 payload writes (crashed, or at its publish CAS): the grace timeout
 *                 outlasts any stall inside a send. 0: no such assumption.
 *   NP NC NW      producers, consumers, watchdogs (NP, NC 0..2; NW 0..2).
 *   MSGS          messages per producer (1..2); RESEND 0/1: send again after a failed
 *                 publish. NRECV: receive calls per consumer.
 *   NS            slots (1..2). NR: member rows (1..3). GENS: row generations, modulo
 *                 (2..4; the slot's tag is the generation modulo GENS).
 *   RELEASING     1: an ack goes held -> releasing -> free. 0: held -> free in one CAS.
 *   EVICT         evictions of live members per run (255: any number).
 *   STALE         1: watchdogs reclaim from a row word read steps before. 0: no such
 *                 watchdogs; the one-step repairs also reclaim, from a fresh read.
 *   RELOCATE      relocations per producer (issue 11, transitions 12 and 13): a producer
 *                 that finds no free slot moves a ready message out of its way (ready ->
 *                 relocating(r, g), then anyone: relocating -> ready) and tries again.
 *                 Without laps the move changes no position; what is checked is that the
 *                 step in between, which a consumer's claim races and a crash may leave,
 *                 loses and doubles nothing. 0: no relocation. RELOCATE_LOSES 1: the
 *                 move publishes the slot free instead of ready (must fail).
 */

#ifndef FENCE
#define FENCE 1
#endif
#ifndef FENCE_CAS
#define FENCE_CAS FENCE
#endif
#ifndef FENCE_ORPHAN
#define FENCE_ORPHAN FENCE
#endif
#ifndef RECLAIM_ANY_TAG
#define RECLAIM_ANY_TAG 0
#endif
#ifndef JOIN_CAS
#define JOIN_CAS 1
#endif
#ifndef ROW_FREE_CAS
#define ROW_FREE_CAS 1
#endif
#ifndef GRACE
#define GRACE 1
#endif
#ifndef NP
#define NP 2
#endif
#ifndef NC
#define NC 2
#endif
#ifndef NW
#define NW 2
#endif
#ifndef MSGS
#define MSGS 1
#endif
#ifndef RESEND
#define RESEND 1
#endif
#ifndef NRECV
#define NRECV 1
#endif
#ifndef NS
#define NS 2
#endif
#ifndef NR
#define NR 2
#endif
#ifndef GENS
#define GENS 4
#endif
#ifndef STALE
#define STALE 1   /* 0: watchdogs never act on a row word read before (see docs/model.md) */
#endif
#ifndef RELEASING
#define RELEASING 1   /* acks go through releasing (a message of k > 1 slots) */
#endif
#ifndef RELOCATE
#define RELOCATE 1
#endif
#ifndef RELOCATE_LOSES
#define RELOCATE_LOSES 0
#endif
#ifndef EVICT
#define EVICT 255   /* evictions of live members (heartbeat misjudgments); 255: any number */
#endif

#define NIDS (NP * MSGS)          /* message ids 1 .. NIDS; 0 = no message */

/* ---- the slot word: (state, owner row, owner tag) in one byte -------------------------------
 * The lap is left out: every CAS that compared it compares less here, so the model has every
 * behaviour of the ring with laps, and more (see docs/model.md, "Abstractions"). */
#define S_FREE      0
#define S_CLAIMED   1
#define S_READY     2
#define S_HELD      3
#define S_SKIPPED   4
#define S_RELEASING 5
#define S_RELOCATING 6
#define NOROW       3

#define W(st, row, tag) ((st) | ((row) << 3) | ((tag) << 5))
#define ST(w)   ((w) & 7)
#define OWN(w)  (((w) >> 3) & 3)
#define TAG(w)  (((w) >> 5) & 3)
#define TAGBITS (3 << 5)
#define FREE_W      W(S_FREE, NOROW, 0)
#define READY_W     W(S_READY, NOROW, 0)
#define RELEASING_W W(S_RELEASING, NOROW, 0)
#if NS > 1
#define READY_ANY (ST(slot[0]) == S_READY || ST(slot[1]) == S_READY)
#else
#define READY_ANY (ST(slot[0]) == S_READY)
#endif
#define OWNED(w) (ST(w) == S_CLAIMED || ST(w) == S_HELD || ST(w) == S_SKIPPED)

/* A member's CAS compares the whole word; without FENCE_CAS it ignores the tag. */
#if FENCE_CAS
#define MEMBER_MATCH(cur, exp) ((cur) == (exp))
#else
#define MEMBER_MATCH(cur, exp) (((cur) | TAGBITS) == ((exp) | TAGBITS))
#endif

/* ---- the member row word: (status, generation) ----------------------------------------- */
#define R_FREE    0
#define R_JOINING 1
#define R_ACTIVE  2
#define R_LEAVING 3
#define RW(st, g) ((st) | ((g) << 2))
#define RST(x)    ((x) & 3)
#define RGEN(x)   ((x) >> 2)
#define NEXTGEN(g) (((g) + 1) % GENS)
#define LIVE(x)   (RST(x) == R_ACTIVE || RST(x) == R_JOINING)

/* The orphan rule: an owned slot whose (row, tag) is not its row's current incarnation. */
#if FENCE_ORPHAN
#define ORPHAN(x, w) (RST(x) == R_FREE || RGEN(x) != TAG(w))
#else
#define ORPHAN(x, w) (RST(x) == R_FREE)
#endif

/* Which slots a watchdog reclaiming the leaving row word x (of row r) takes back. */
#if RECLAIM_ANY_TAG
#define RECLAIMS(x, w, r) (OWNED(w) && OWN(w) == (r))
#else
#define RECLAIMS(x, w, r) (OWNED(w) && OWN(w) == (r) && TAG(w) == RGEN(x))
#endif

#if GRACE
#define GRACE_OVER(s) (inflight[s] == 0)
#else
#define GRACE_OVER(s) true
#endif

/* ---- shared memory ------------------------------------------------------------------------ */
byte slot[NS];      /* slot words (init: free) */
byte msg[NS];       /* payloads: a message id, 0 = none */
byte rw[NR];        /* member rows (init: free, generation 0) */

/* ---- ghost state: read by assertions only, never by the protocol ------------------------- */
byte creator[NS];          /* pid whose claim made the slot's owned state; 0 when unowned */
byte inflight[NS];         /* pid of a producer between its claim and its publish CAS */
bool published[NIDS + 1];  /* its publish CAS succeeded: the send returned ok */
byte acked[NIDS + 1];      /* successful acks of it */
byte gi, gj, gc, gt;  /* scratch (invariant, sort): always 0 between steps */
byte members = NP + NC;    /* members that have not ended yet (ends the watchdogs' runs) */
byte wds;                  /* watchdog processes still running */
#if EVICT < 255
bool dead[NR];             /* row r's current incarnation is a crashed process's */
byte misjudged;            /* evictions of live members so far */
#define JUDGE(i) (dead[i] || misjudged < EVICT)
#define JUDGED(i) if :: dead[i] -> dead[i] = 0 :: else -> misjudged++ fi
#define DIES \
  if \
  :: rw[r] == RW(R_ACTIVE, g) || rw[r] == RW(R_JOINING, g) -> dead[r] = 1 \
  :: else -> skip \
  fi
#else
#define JUDGE(i) true
#define JUDGED(i) skip
#define DIES skip
#endif

/* The invariant, checked inside every step that changes a slot, a payload or the ghosts:
 * at most one deliverable (ready or held) copy of each message; a published message is
 * acked or has that copy; an acked message has none left; none is acked twice. */
#define CHECK_INV \
  gi = 1; \
  do \
  :: gi <= NIDS -> \
     gc = 0; gj = 0; \
     do \
     :: gj < NS -> \
        if \
        :: msg[gj] == gi && (ST(slot[gj]) == S_READY || ST(slot[gj]) == S_HELD || \
                             ST(slot[gj]) == S_RELOCATING) -> gc++ \
        :: else -> skip \
        fi; \
        gj++ \
     :: else -> break \
     od; \
     assert(gc <= 1);                                      /* one copy */ \
     assert(!published[gi] || acked[gi] == 1 || gc == 1); /* none lost */ \
     assert(acked[gi] == 0 || gc == 0);                    /* none back after its ack */ \
     assert(acked[gi] <= 1);                               /* none acked twice */ \
     gi++ \
  :: else -> break \
  od; \
  gi = 0; gj = 0; gc = 0

/* "No member acting on a row it lost": a member CAS that succeeds on an owned word finds a
 * word that this very process made. */
#define MINE(s) assert(creator[s] == _pid)

/* "A repair never makes a message deliverable twice": the watchdog takes a held message back
 * only from an incarnation that no longer owns its row (dead, evicted or freed). */
#define NOT_LIVE_HOLDER(s) assert(rw[OWN(slot[s])] != RW(R_ACTIVE, TAG(slot[s])))

/* The repairs, each one CAS from the exact word w read (watchdog.cpp reclaim, scan_slots). */
#define REQUEUE_HELD(s)    NOT_LIVE_HOLDER(s); slot[s] = READY_W; creator[s] = 0
#define QUARANTINE(s, w)   slot[s] = W(S_SKIPPED, OWN(w), TAG(w))
#define RELEASE_SKIPPED(s) slot[s] = FREE_W; msg[s] = 0; creator[s] = 0
#define FINISH_RELEASE(s)  slot[s] = FREE_W; msg[s] = 0
#if RELOCATE_LOSES
#define FINISH_RELOCATION(s) slot[s] = FREE_W; CHECK_INV   /* broken on purpose: must fail */
#else
#define FINISH_RELOCATION(s) slot[s] = READY_W; CHECK_INV
#endif
#define SAY_SLOT(what, i) SAY(what, _pid, WHY, i, OWN(slot[i]), TAG(slot[i]))

/* Narration for counterexamples (spin -t prints it; the verifier ignores it). */
#define SAY printf

/* Crash points: instead of any step, a member may stop for good (`if OR_CRASH :: step fi`);
 * its row stays as it is until a watchdog judges it dead. (The step's first statement is then
 * a guard beside the crash: an `else` there would never be taken, so those steps spell out
 * the negation instead.) A member that has ended, however, waits at end_parked with its
 * locals cleared (END), so that every ended member is in one state. */
#define OR_CRASH :: atomic { SAY("%c%d crashes\n", WHO, _pid); CRASH_EFFECT; END }

/* The check every public call starts with (`evicted` unless the row is still active with our
 * generation) is racy on its own: check, stall, act. The model takes its worst case: every
 * check passed just before the member was evicted. A member that did see the eviction and
 * stopped is the same, for shared memory, as one that crashed there. So the check itself is
 * not a step here, and the tag in each CAS is all that fences. */

/* ---- member registration and close (segment.cpp register_member, unregister_member) ------ */
/* free(g) --CAS--> joining(g+1) --CAS--> active(g+1). No free row: no_space.
 *
 * With JOIN_CAS the joining state is folded into one step: nobody else tells joining from
 * active (both are live for the judge, neither is an orphan's row, the member has made no
 * slot word yet), and a member whose CAS joining -> active fails gives up, which is for
 * shared memory the same as a crash right after its first CAS. Without JOIN_CAS the two
 * steps are kept, with the plain store between. */
#if JOIN_CAS
#define REGISTER_MEMBER \
  atomic { \
    if \
    :: RST(rw[0]) == R_FREE -> r = 0 \
    ROW_OPTIONS \
    :: else -> END   /* no_space */ \
    fi; \
    g = NEXTGEN(RGEN(rw[r])); \
    rw[r] = RW(R_ACTIVE, g); \
    SAY("%c%d registers: row %d active(gen %d)\n", WHO, _pid, r, g) \
  }
#else
/* start time, heartbeat and counters are written; then the release store */
#define REGISTER_MEMBER \
  atomic { \
    if \
    :: RST(rw[0]) == R_FREE -> r = 0 \
    ROW_OPTIONS \
    :: else -> END   /* no_space */ \
    fi; \
    g = NEXTGEN(RGEN(rw[r])); \
    rw[r] = RW(R_JOINING, g); \
    SAY("%c%d registers: row %d joining(gen %d)\n", WHO, _pid, r, g) \
  }; \
  if \
  OR_CRASH \
  :: atomic { \
       rw[r] = RW(R_ACTIVE, g); \
       SAY("%c%d stores row %d := active(gen %d)\n", WHO, _pid, r, g) \
     } \
  fi
#endif
#if NR == 1
#define ROW_OPTIONS
#elif NR == 2
#define ROW_OPTIONS :: RST(rw[1]) == R_FREE -> r = 1
#else
#define ROW_OPTIONS :: RST(rw[1]) == R_FREE -> r = 1 :: RST(rw[2]) == R_FREE -> r = 2
#endif

/* active(g) --CAS--> leaving(g) --CAS--> free(g), folded into one step, made by the step
 * that decides to close: the member holds nothing when it closes here (a consumer has acked
 * or nacked, release_all being the nack path; a producer has published or given its
 * quarantined claim back), so no slot names (r, g), and neither the leaving row word in
 * between nor the moment of the decision changes anything another process could do. */
#define CLOSE_AND_END \
  if \
  :: rw[r] == RW(R_ACTIVE, g) -> \
     rw[r] = RW(R_FREE, g); SAY("%c%d closes: row %d free(gen %d)\n", WHO, _pid, r, g) \
  :: else -> SAY("%c%d closes: evicted\n", WHO, _pid) \
  fi; \
  END

/* ---- producer: producer.cpp claim, write_and_publish_prepare, publish; release_claim ------ */
#define ID (p * MSGS + i + 1)

#define CRASH_EFFECT \
  if \
  :: inflight[s] == _pid -> inflight[s] = 0   /* a dead process writes nothing more */ \
  :: else -> skip \
  fi; \
  DIES
#define END members--; r = 0; g = 0; s = 0; i = 0; resends = 0; relocs = 0; goto end_parked
#define WHO 'P'

proctype producer(byte p) {
  byte r, g, s, i, resends, relocs;

  REGISTER_MEMBER;
send:
  if
  OR_CRASH
  :: /* claim: free -> claimed(r, g). The tail is a hint, so any free slot. */
     atomic {
       if
       :: i == MSGS -> CLOSE_AND_END
       :: i < MSGS -> skip
       fi;
       if
       :: ST(slot[0]) == S_FREE -> s = 0
#if NS > 1
       :: ST(slot[1]) == S_FREE -> s = 1
#endif
#if RELOCATE
       /* relocation (12): ready -> relocating(r, g), the CAS a consumer's claim races */
       :: relocs < RELOCATE && ST(slot[0]) == S_READY ->
          s = 0; slot[0] = W(S_RELOCATING, r, g); relocs++;
          SAY("P%d relocates message %d in slot 0\n", _pid, msg[0]); goto relocated
#if NS > 1
       :: relocs < RELOCATE && ST(slot[1]) == S_READY ->
          s = 1; slot[1] = W(S_RELOCATING, r, g); relocs++;
          SAY("P%d relocates message %d in slot 1\n", _pid, msg[1]); goto relocated
#endif
#endif
       :: else -> i++; resends = 0; goto send   /* full: this send fails, nothing was sent */
       fi;
       slot[s] = W(S_CLAIMED, r, g); creator[s] = _pid; inflight[s] = _pid;
       SAY("P%d claims slot %d: claimed(row %d, tag %d)\n", _pid, s, r, g)
     }
  fi;
  /* The payload: plain stores, fenced by nothing but the grace. With GRACE the slot stays
     claimed or skipped by this producer until its publish (nobody reads or writes it), so
     the write is folded into the publish step. */
#if !GRACE
  if
  OR_CRASH
  :: d_step { msg[s] = ID; CHECK_INV }
  fi;
#endif
  if
  OR_CRASH
  :: /* publish: claimed(r, g) -> ready (release); fails if the claim was quarantined */
     atomic {
#if GRACE
       msg[s] = ID;
#endif
       inflight[s] = 0;
       if
       :: MEMBER_MATCH(slot[s], W(S_CLAIMED, r, g)) ->
          MINE(s); slot[s] = READY_W; creator[s] = 0; published[ID] = 1;
          SAY("P%d publishes message %d in slot %d: ready\n", _pid, ID, s);
          CHECK_INV;
          i++; resends = 0; s = 0;
          goto send
       :: else ->
          SAY("P%d's publish of message %d fails: slot %d was quarantined\n", _pid, ID, s);
          CHECK_INV
       fi
     }
  fi;
  if
  OR_CRASH
  :: /* publish failed: give the quarantined claim back, skipped(r, g) -> free
        (transition 8), then send again (at most RESEND times) */
     d_step {
       if
       :: MEMBER_MATCH(slot[s], W(S_SKIPPED, r, g)) ->
          MINE(s); RELEASE_SKIPPED(s); SAY("P%d gives slot %d back: free\n", _pid, s)
       :: !MEMBER_MATCH(slot[s], W(S_SKIPPED, r, g)) -> skip   /* released already */
       fi;
       CHECK_INV;
       if
       :: resends < RESEND -> resends++
       :: else -> i++; resends = 0
       fi;
       s = 0
     }
  fi;
  goto send;
relocated:
  if
  OR_CRASH
  :: d_step {   /* finish_relocation (13): anyone may do it, from the exact word */
       if
       :: slot[s] == W(S_RELOCATING, r, g) -> FINISH_RELOCATION(s);
          SAY("P%d finishes the relocation of slot %d: ready\n", _pid, s)
       :: else -> skip
       fi;
       CHECK_INV;
       s = 0
     }
  fi;
  goto send;
end_parked:
  false
}
#undef CRASH_EFFECT
#undef END
#undef WHO

/* ---- consumer: consumer.cpp claim_at, ack, nack; slot_ops release_held, requeue_held ----- */
#if GRACE
#define KEEP_M
#define CHECK_M
#else
#define KEEP_M m = msg[s];
#define CHECK_M assert(msg[s] == m);   /* the bytes did not change while it was held */
#endif

#define CRASH_EFFECT DIES
#if GRACE
#define END members--; r = 0; g = 0; s = 0; n = 0; goto end_parked
#else
#define END members--; r = 0; g = 0; s = 0; n = 0; m = 0; goto end_parked
#endif

#define WHO 'C'

proctype consumer() {
  byte r, g, s, n;
#if !GRACE
  byte m;
#endif

  REGISTER_MEMBER;
recv:
  if
  OR_CRASH
  :: /* receive: ready -> held(r, g) (acquire). Dispatch is a hint, so any ready slot. */
     atomic {
       if
       :: n < NRECV && ST(slot[0]) == S_READY -> s = 0
#if NS > 1
       :: n < NRECV && ST(slot[1]) == S_READY -> s = 1
#endif
       :: !(n < NRECV && READY_ANY) -> CLOSE_AND_END   /* empty (or done): it stops */
       fi;
       slot[s] = W(S_HELD, r, g); creator[s] = _pid; KEEP_M n++;
       SAY("C%d takes message %d from slot %d: held(row %d, tag %d)\n", _pid, msg[s], s, r, g)
     }
  fi;
  if
  OR_CRASH
  :: /* ack: held(r, g) -> releasing -> free (release); with RELEASING 0, held(r, g) -> free
        in one CAS, as release_held does for a message of one slot */
     atomic {
       if
       :: MEMBER_MATCH(slot[s], W(S_HELD, r, g)) ->
          MINE(s); CHECK_M
          SAY("C%d acks message %d in slot %d\n", _pid, msg[s], s);
#if RELEASING
          acked[msg[s]]++; slot[s] = RELEASING_W; creator[s] = 0;
#else
          acked[msg[s]]++; slot[s] = FREE_W; msg[s] = 0; creator[s] = 0;
#endif
          CHECK_INV;
#if !RELEASING
          s = 0; goto recv
#endif
       :: !MEMBER_MATCH(slot[s], W(S_HELD, r, g)) ->
          SAY("C%d's ack: lease_lost\n", _pid); s = 0; goto recv
       fi
     };
#if RELEASING
     if
     OR_CRASH
     :: d_step {   /* finish_release: anyone may do it; idempotent */
          if
          :: slot[s] == RELEASING_W -> FINISH_RELEASE(s)
          :: slot[s] != RELEASING_W -> skip
          fi;
          s = 0
        }
     fi
#endif
  :: /* nack (requeue): held(r, g) -> ready */
     d_step {
       if
       :: MEMBER_MATCH(slot[s], W(S_HELD, r, g)) ->
          MINE(s); slot[s] = READY_W; creator[s] = 0;
          SAY("C%d nacks message %d in slot %d: ready\n", _pid, msg[s], s)
       :: !MEMBER_MATCH(slot[s], W(S_HELD, r, g)) -> SAY("C%d's nack: lease_lost\n", _pid)
       fi;
       CHECK_INV;
       s = 0
     }
  fi;
  goto recv;
end_parked:
  false
}
#undef CRASH_EFFECT
#undef END
#undef WHO

/* ---- watchdogs: watchdog.cpp tick -------------------------------------------------------- */

/* One slot's repair, as one CAS from the word the watchdog reads in the same step. A
 * quarantined claim is released only once its grace is over. */
#define REPAIRABLE(i) (ST(slot[i]) != S_SKIPPED || GRACE_OVER(i))
#define REPAIR(i) \
  if \
  :: ST(slot[i]) == S_HELD -> SAY_SLOT("W%d (%c) requeues held slot %d (row %d, tag %d): ready\n", i); REQUEUE_HELD(i) \
  :: ST(slot[i]) == S_CLAIMED -> SAY_SLOT("W%d (%c) quarantines claimed slot %d (row %d, tag %d): skipped\n", i); QUARANTINE(i, slot[i]) \
  :: ST(slot[i]) == S_SKIPPED && GRACE_OVER(i) -> SAY_SLOT("W%d (%c) releases skipped slot %d (row %d, tag %d): free\n", i); RELEASE_SKIPPED(i) \
  fi; \
  CHECK_INV

/* The repairs that depend on nothing read before the step that makes them. Whichever
 * watchdog makes one, the change is the same, so one process without state makes them all,
 * at any time, as often as it likes (the election is left out: see docs/model.md).
 *  - judge a member dead (pid gone; or heartbeat stale, maybe only stalled): evict it;
 *  - scan_slots, the claim timeout (7w): quarantine any claim; its producer's publish fails;
 *  - scan_slots, releasing: finish a release whose process died half-way;
 *  - scan_slots, the orphan rule: repair an owned slot whose (row, tag) is not its row's
 *    current incarnation. watchdog.cpp reads the slot word, then the row word, then CASes
 *    the slot from the word it read; that is the same as this one step (docs/model.md). */
#define SAY_EVICT(i) SAY("W%d judges row %d dead: leaving(gen %d)\n", _pid, i, RGEN(rw[i]))
#define WHY 'S'   /* narration: a scan_slots repair */

proctype repairs() {
  do
  :: atomic {
       if
       :: LIVE(rw[0]) && JUDGE(0) -> JUDGED(0); rw[0] = RW(R_LEAVING, RGEN(rw[0])); SAY_EVICT(0)
#if NR > 1
       :: LIVE(rw[1]) && JUDGE(1) -> JUDGED(1); rw[1] = RW(R_LEAVING, RGEN(rw[1])); SAY_EVICT(1)
#endif
#if NR > 2
       :: LIVE(rw[2]) && JUDGE(2) -> JUDGED(2); rw[2] = RW(R_LEAVING, RGEN(rw[2])); SAY_EVICT(2)
#endif
       fi
     }
  :: atomic { ST(slot[0]) == S_CLAIMED -> SAY_SLOT("W%d (%c) claim timeout: quarantines slot %d (row %d, tag %d): skipped\n", 0); QUARANTINE(0, slot[0]) }
#if NS > 1
  :: atomic { ST(slot[1]) == S_CLAIMED -> SAY_SLOT("W%d (%c) claim timeout: quarantines slot %d (row %d, tag %d): skipped\n", 1); QUARANTINE(1, slot[1]) }
#endif
  :: atomic { slot[0] == RELEASING_W -> FINISH_RELEASE(0); SAY("W%d finishes the release of slot 0\n", _pid) }
#if NS > 1
  :: atomic { slot[1] == RELEASING_W -> FINISH_RELEASE(1); SAY("W%d finishes the release of slot 1\n", _pid) }
#endif
  /* a relocation whose producer died or stalled (13): finished by anyone, at any time */
  :: atomic { ST(slot[0]) == S_RELOCATING -> FINISH_RELOCATION(0); SAY("W%d finishes the relocation of slot 0\n", _pid) }
#if NS > 1
  :: atomic { ST(slot[1]) == S_RELOCATING -> FINISH_RELOCATION(1); SAY("W%d finishes the relocation of slot 1\n", _pid) }
#endif
  :: atomic { OWNED(slot[0]) && ORPHAN(rw[OWN(slot[0])], slot[0]) && REPAIRABLE(0) -> REPAIR(0) }
#if NS > 1
  :: atomic { OWNED(slot[1]) && ORPHAN(rw[OWN(slot[1])], slot[1]) && REPAIRABLE(1) -> REPAIR(1) }
#endif
#if !STALE
  /* reclaim(r) by a watchdog that is never stale: see STALE */
  :: atomic { OWNED(slot[0]) && RST(rw[OWN(slot[0])]) == R_LEAVING && RECLAIMS(rw[OWN(slot[0])], slot[0], OWN(slot[0])) && REPAIRABLE(0) -> REPAIR(0) }
#if NS > 1
  :: atomic { OWNED(slot[1]) && RST(rw[OWN(slot[1])]) == R_LEAVING && RECLAIMS(rw[OWN(slot[1])], slot[1], OWN(slot[1])) && REPAIRABLE(1) -> REPAIR(1) }
#endif
  :: atomic { RST(rw[0]) == R_LEAVING -> rw[0] = RW(R_FREE, RGEN(rw[0])); SAY_FREE(0) }
#if NR > 1
  :: atomic { RST(rw[1]) == R_LEAVING -> rw[1] = RW(R_FREE, RGEN(rw[1])); SAY_FREE(1) }
#endif
#if NR > 2
  :: atomic { RST(rw[2]) == R_LEAVING -> rw[2] = RW(R_FREE, RGEN(rw[2])); SAY_FREE(2) }
#endif
#endif
  :: atomic { members == 0 -> wds--; break }   /* (stopping earlier: the same as idling) */
  od
}
#undef WHY
#define WHY 'R'   /* narration: a reclaim repair */

/* reclaim(r) (watchdog.cpp reclaim), the repair that acts on what it read steps before: read
 * the word x of a leaving row r; then, slot by slot, one CAS from the word just read, judged
 * by x (which may be stale by then); then the CAS x -> free. The model lets a watchdog visit
 * the slots in any order, any number of times, free the row at any point after reading x,
 * or give up (or die) half-way: every pass watchdog.cpp makes is among these.
 *
 * A watchdog's whole state is then what it read: snap = r << 4 | x, 0 when it holds nothing.
 * The NW watchdogs are one process that keeps their snaps sorted: they are alike, so which of
 * them holds which snap makes no difference (a symmetry reduction, done by hand), and every
 * step below is one step of one watchdog. */
#define SAY_FREE(i) SAY("W%d frees row %d: free(gen %d)\n", _pid, i, RGEN(rw[i]))
#define SNAP_R(k) (snap[k] >> 4)
#define SNAP_X(k) (snap[k] & 15)
#define SAY_SNAP(i) SAY("W%d starts reclaim(row %d): reads leaving(gen %d)\n", _pid, i, RGEN(rw[i]))
#define LEAVING_ROW(i) (RST(rw[i]) == R_LEAVING)
#if NW > 1
#define SORT_SNAPS \
  if \
  :: snap[0] > snap[1] -> gt = snap[0]; snap[0] = snap[1]; snap[1] = gt; gt = 0 \
  :: else -> skip \
  fi
#else
#define SORT_SNAPS skip
#endif
#if ROW_FREE_CAS
#define FREE_ROW(k) \
  if \
  :: rw[SNAP_R(k)] == SNAP_X(k) -> rw[SNAP_R(k)] = RW(R_FREE, RGEN(SNAP_X(k))); SAY_FREE(SNAP_R(k)) \
  :: else -> skip \
  fi
#else
#define FREE_ROW(k) \
  rw[SNAP_R(k)] = RW(R_FREE, RGEN(SNAP_X(k))); \
  SAY("W%d stores row %d := free(gen %d)\n", _pid, SNAP_R(k), RGEN(SNAP_X(k)))
#endif
#if NR == 1
#define TAKE_SNAP(k) :: atomic { snap[k] == 0 && LEAVING_ROW(0) -> snap[k] = rw[0]; SAY_SNAP(0); SORT_SNAPS }
#elif NR == 2
#define TAKE_SNAP(k) \
  :: atomic { snap[k] == 0 && LEAVING_ROW(0) -> snap[k] = rw[0]; SAY_SNAP(0); SORT_SNAPS } \
  :: atomic { snap[k] == 0 && LEAVING_ROW(1) -> snap[k] = (1 << 4) | rw[1]; SAY_SNAP(1); SORT_SNAPS }
#else
#define TAKE_SNAP(k) \
  :: atomic { snap[k] == 0 && LEAVING_ROW(0) -> snap[k] = rw[0]; SAY_SNAP(0); SORT_SNAPS } \
  :: atomic { snap[k] == 0 && LEAVING_ROW(1) -> snap[k] = (1 << 4) | rw[1]; SAY_SNAP(1); SORT_SNAPS } \
  :: atomic { snap[k] == 0 && LEAVING_ROW(2) -> snap[k] = (2 << 4) | rw[2]; SAY_SNAP(2); SORT_SNAPS }
#endif
#define RECLAIM_AT(k, i) \
  :: atomic { \
       snap[k] != 0 && RECLAIMS(SNAP_X(k), slot[i], SNAP_R(k)) && REPAIRABLE(i) -> REPAIR(i) \
     }
#if NS == 1
#define RECLAIM_SLOTS(k) RECLAIM_AT(k, 0)
#else
#define RECLAIM_SLOTS(k) RECLAIM_AT(k, 0) RECLAIM_AT(k, 1)
#endif
#define WATCHDOG(k) \
  TAKE_SNAP(k) \
  RECLAIM_SLOTS(k) \
  :: d_step { snap[k] != 0 -> FREE_ROW(k); snap[k] = 0; SORT_SNAPS } \
  :: d_step { snap[k] != 0 -> snap[k] = 0; SORT_SNAPS }   /* gives up, or dies, half-way */

proctype watchdogs() {
  byte snap[NW];
  do
  WATCHDOG(0)
#if NW > 1
  WATCHDOG(1)
#endif
  :: atomic { members == 0 -> wds--; break }   /* (stopping or dying earlier: the same as idling) */
  od
}

/* ---- the run; then quiescence and the end-state checks ---------------------------------- */

/* One tick of the last watchdog: no other process runs, every member is judged dead, every
 * grace is over. The same repairs as above, in watchdog.cpp's order. */
#define FINAL_TICK \
  d_step { \
    r = 0; \
    do \
    :: r < NR -> \
       if \
       :: RST(rw[r]) == R_ACTIVE || RST(rw[r]) == R_JOINING -> rw[r] = RW(R_LEAVING, RGEN(rw[r])) \
       :: else -> skip \
       fi; \
       if \
       :: RST(rw[r]) == R_LEAVING -> \
          x = rw[r]; rem = 0; s = 0; \
          do \
          :: s < NS -> \
             w = slot[s]; \
             if \
             :: RECLAIMS(x, w, r) && ST(w) == S_HELD -> REQUEUE_HELD(s) \
             :: RECLAIMS(x, w, r) && ST(w) == S_CLAIMED -> QUARANTINE(s, w); rem++ \
             :: RECLAIMS(x, w, r) && ST(w) == S_SKIPPED -> assert(GRACE_OVER(s)); RELEASE_SKIPPED(s) \
             :: else -> skip \
             fi; \
             s++ \
          :: else -> break \
          od; \
          if \
          :: rem == 0 -> rw[r] = RW(R_FREE, RGEN(x)) \
          :: else -> skip \
          fi \
       :: else -> skip \
       fi; \
       r++ \
    :: else -> break \
    od; \
    s = 0; \
    do \
    :: s < NS -> \
       w = slot[s]; \
       if \
       :: OWNED(w) && ORPHAN(rw[OWN(w)], w) -> \
          if \
          :: ST(w) == S_HELD -> REQUEUE_HELD(s) \
          :: ST(w) == S_CLAIMED -> QUARANTINE(s, w) \
          :: ST(w) == S_SKIPPED -> RELEASE_SKIPPED(s) \
          fi \
       :: w == RELEASING_W -> FINISH_RELEASE(s) \
       :: ST(w) == S_RELOCATING -> FINISH_RELOCATION(s) \
       :: else -> skip \
       fi; \
       s++ \
    :: else -> break \
    od; \
    CHECK_INV; \
    r = 0; s = 0; x = 0; w = 0; rem = 0 \
  }

init {
  byte r, s, x, w, rem, k;
  atomic {
    s = 0;
    do :: s < NS -> slot[s] = FREE_W; s++ :: else -> break od;
    k = 0;
    do :: k < NP -> run producer(k); k++ :: else -> break od;
    k = 0;
    do :: k < NC -> run consumer(); k++ :: else -> break od;
    k = 0;
    if :: NW > 0 && STALE -> run watchdogs(); wds++ :: else -> skip fi;
    if :: NW > 0 -> run repairs(); wds++ :: else -> skip fi;
    s = 0; k = 0
  };
  members == 0 && wds == 0;   /* every member has ended (or crashed), every watchdog stopped */
  FINAL_TICK;
  FINAL_TICK;
  FINAL_TICK;
  d_step {
    /* no wedge: nothing owned, half released, joining or leaving is left */
    s = 0;
    do
    :: s < NS -> assert(ST(slot[s]) == S_FREE || ST(slot[s]) == S_READY); s++
    :: else -> break
    od;
    r = 0;
    do
    :: r < NR -> assert(RST(rw[r]) == R_FREE); r++
    :: else -> break
    od;
    /* no loss: every published message was acked once, or waits in the ring, ready */
    k = 1;
    do
    :: k <= NIDS ->
       gc = 0; s = 0;
       do
       :: s < NS -> if :: msg[s] == k && ST(slot[s]) == S_READY -> gc++ :: else -> skip fi; s++
       :: else -> break
       od;
       assert(!published[k] || (acked[k] == 1 && gc == 0) || (acked[k] == 0 && gc == 1));
       k++
    :: else -> break
    od;
    gc = 0; r = 0; s = 0; k = 0
  }
}
