-- A PostgreSQL store written by kuaimod_open before the Alembic schema (migrations m001-m004, main at 1fb8b9c),
-- dumped with pg_dump --no-owner --no-privileges --inserts (psql meta-commands removed). Loaded by tests/test_store_schema.py.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: feedback; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.feedback (
    id integer NOT NULL,
    event_id character varying(64) NOT NULL,
    sample_id character varying(200) NOT NULL,
    kind character varying(32) NOT NULL,
    category character varying(64),
    decision character varying(16),
    reason text NOT NULL,
    author character varying(200) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    source character varying(200) DEFAULT ''::character varying
);


--
-- Name: feedback_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.feedback_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: feedback_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.feedback_id_seq OWNED BY public.feedback.id;


--
-- Name: gate_decisions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.gate_decisions (
    id integer NOT NULL,
    kind character varying(16) NOT NULL,
    candidate text NOT NULL,
    baseline text NOT NULL,
    passed boolean NOT NULL,
    details text NOT NULL,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: gate_decisions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.gate_decisions_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: gate_decisions_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.gate_decisions_id_seq OWNED BY public.gate_decisions.id;


--
-- Name: models; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.models (
    id integer NOT NULL,
    kind character varying(16) NOT NULL,
    name character varying(200) NOT NULL,
    path text NOT NULL,
    status character varying(16) NOT NULL,
    meta text NOT NULL,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: models_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.models_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: models_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.models_id_seq OWNED BY public.models.id;


--
-- Name: precedents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.precedents (
    id integer NOT NULL,
    sample_id character varying(200) NOT NULL,
    feedback_id integer,
    text text NOT NULL,
    category character varying(64) NOT NULL,
    decision character varying(16) NOT NULL,
    reason text NOT NULL,
    author character varying(200) NOT NULL,
    embedding bytea,
    retired_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: precedents_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.precedents_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: precedents_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.precedents_id_seq OWNED BY public.precedents.id;


--
-- Name: review_audit; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.review_audit (
    id integer NOT NULL,
    actor character varying(200) NOT NULL,
    action character varying(64) NOT NULL,
    sample_id character varying(200),
    detail text NOT NULL,
    created_at timestamp with time zone NOT NULL
);


--
-- Name: review_audit_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.review_audit_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: review_audit_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.review_audit_id_seq OWNED BY public.review_audit.id;


--
-- Name: samples; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.samples (
    id character varying(200) NOT NULL,
    title text NOT NULL,
    ocr text NOT NULL,
    asr text NOT NULL,
    comments text NOT NULL,
    video text,
    frames text NOT NULL,
    label character varying(64),
    created_at timestamp with time zone NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    name character varying(100) NOT NULL,
    applied_at text
);


--
-- Name: verdicts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.verdicts (
    id integer NOT NULL,
    sample_id character varying(200) NOT NULL,
    decision character varying(16) NOT NULL,
    category character varying(64),
    confidence double precision,
    status character varying(16) NOT NULL,
    stage character varying(16) NOT NULL,
    model text NOT NULL,
    policy_version character varying(64) NOT NULL,
    policy_digest character varying(32) NOT NULL,
    payload text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    adapter text,
    prompt_digest character varying(32)
);


--
-- Name: verdicts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.verdicts_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: verdicts_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.verdicts_id_seq OWNED BY public.verdicts.id;


--
-- Name: watermarks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.watermarks (
    name character varying(64) NOT NULL,
    value integer NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: feedback id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.feedback ALTER COLUMN id SET DEFAULT nextval('public.feedback_id_seq'::regclass);


--
-- Name: gate_decisions id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.gate_decisions ALTER COLUMN id SET DEFAULT nextval('public.gate_decisions_id_seq'::regclass);


--
-- Name: models id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.models ALTER COLUMN id SET DEFAULT nextval('public.models_id_seq'::regclass);


--
-- Name: precedents id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.precedents ALTER COLUMN id SET DEFAULT nextval('public.precedents_id_seq'::regclass);


--
-- Name: review_audit id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.review_audit ALTER COLUMN id SET DEFAULT nextval('public.review_audit_id_seq'::regclass);


--
-- Name: verdicts id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.verdicts ALTER COLUMN id SET DEFAULT nextval('public.verdicts_id_seq'::regclass);


--
-- Data for Name: feedback; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.feedback VALUES (1, '392637a0e2ac03a7bb965896d1a6e517', 'legacy-01', 'reviewer_decision', 'BENIGN', 'allow', 'ok', 'rev1', '2025-03-01 01:01:00+00', '');
INSERT INTO public.feedback VALUES (2, 'f3ce39554899a27723c7dbdb0789a314', 'legacy-02', 'reviewer_decision', 'BENIGN', 'allow', 'ok', 'rev1', '2025-03-01 01:02:00+00', '');
INSERT INTO public.feedback VALUES (3, '4d6ccdf62acb7e3913455877f6750778', 'legacy-05', 'reviewer_decision', 'BENIGN', 'allow', 'ok', 'rev1', '2025-03-01 01:05:00+00', '');
INSERT INTO public.feedback VALUES (4, '104ca7c82db144f53c5c4d34ceccd311', 'legacy-03', 'user_report', NULL, NULL, '', 'u1', '2025-03-01 02:00:00+00', '');
INSERT INTO public.feedback VALUES (5, 'be375f983961d70d03339e3290f28474', 'legacy-02', 'appeal_outcome', 'HATE', 'block', '', 'appeals', '2025-03-01 03:00:00+00', '');


--
-- Data for Name: gate_decisions; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: models; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.models VALUES (1, 'policy', '1.0.0', '/work/main/prompts/policy.yaml', 'active', '{"digest": "7c6d4188be2ab058", "note": ""}', '2026-12-03 08:53:16.963658+00');


--
-- Data for Name: precedents; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.precedents VALUES (1, 'legacy-01', NULL, '标题: 标题 1', 'BENIGN', 'allow', 'ok', 'rev1', NULL, NULL, '2026-12-03 08:53:16.926303+00');


--
-- Data for Name: review_audit; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.review_audit VALUES (1, 'rev1', 'agree', 'legacy-01', '{}', '2025-03-01 00:00:00+00');


--
-- Data for Name: samples; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.samples VALUES ('legacy-00', '标题 0', '加我V', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.847565+00');
INSERT INTO public.samples VALUES ('legacy-01', '标题 1', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.858549+00');
INSERT INTO public.samples VALUES ('legacy-02', '标题 2', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.86162+00');
INSERT INTO public.samples VALUES ('legacy-03', '标题 3', '加我V', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.866148+00');
INSERT INTO public.samples VALUES ('legacy-04', '标题 4', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.868481+00');
INSERT INTO public.samples VALUES ('legacy-05', '标题 5', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.871291+00');
INSERT INTO public.samples VALUES ('legacy-06', '标题 6', '加我V', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.87519+00');
INSERT INTO public.samples VALUES ('legacy-07', '标题 7', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.881912+00');
INSERT INTO public.samples VALUES ('legacy-08', '标题 8', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.890413+00');
INSERT INTO public.samples VALUES ('legacy-09', '标题 9', '加我V', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.895656+00');
INSERT INTO public.samples VALUES ('legacy-10', '标题 10', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.897879+00');
INSERT INTO public.samples VALUES ('legacy-11', '标题 11', '', '', '["好"]', NULL, '[]', NULL, '2026-12-03 08:53:16.899943+00');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.schema_migrations VALUES ('m001_initial', '2026-12-03T08:53:16.754372+00:00');
INSERT INTO public.schema_migrations VALUES ('m002_verdict_adapter_and_prompt', '2026-12-03T08:53:16.757810+00:00');
INSERT INTO public.schema_migrations VALUES ('m003_feedback_source', '2026-12-03T08:53:16.760045+00:00');
INSERT INTO public.schema_migrations VALUES ('m004_review_audit', '2026-12-03T08:53:16.770592+00:00');


--
-- Data for Name: verdicts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.verdicts VALUES (1, 'legacy-00', 'review', 'HATE', 0.4, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-00","decision":"review","category":"HATE","tag":"辱骂、引战、宣扬仇恨","other_categories":[],"confidence":0.4,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"HATE\", \"other_categories\": [], \"confidence\": 0.4, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":["low_confidence"],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:00:00Z"}}', '2025-03-01 00:00:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (2, 'legacy-01', 'allow', 'BENIGN', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-01","decision":"allow","category":"BENIGN","tag":"正向","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"BENIGN\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:01:00Z"}}', '2025-03-01 00:01:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (3, 'legacy-02', 'block', 'PORN_VULGAR', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-02","decision":"block","category":"PORN_VULGAR","tag":"色情低俗","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"PORN_VULGAR\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:02:00Z"}}', '2025-03-01 00:02:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (4, 'legacy-03', 'block', 'PRIVATE_DEAL', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-03","decision":"block","category":"PRIVATE_DEAL","tag":"引导私下交易","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"PRIVATE_DEAL\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:03:00Z"}}', '2025-03-01 00:03:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (5, 'legacy-04', 'review', 'MISINFO', 0.4, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-04","decision":"review","category":"MISINFO","tag":"不实信息","other_categories":[],"confidence":0.4,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"MISINFO\", \"other_categories\": [], \"confidence\": 0.4, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":["low_confidence"],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:04:00Z"}}', '2025-03-01 00:04:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (6, 'legacy-05', 'block', 'HATE', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-05","decision":"block","category":"HATE","tag":"辱骂、引战、宣扬仇恨","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"HATE\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:05:00Z"}}', '2025-03-01 00:05:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (7, 'legacy-06', 'allow', 'BENIGN', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-06","decision":"allow","category":"BENIGN","tag":"正向","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"BENIGN\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:06:00Z"}}', '2025-03-01 00:06:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (8, 'legacy-07', 'block', 'PORN_VULGAR', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-07","decision":"block","category":"PORN_VULGAR","tag":"色情低俗","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"PORN_VULGAR\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:07:00Z"}}', '2025-03-01 00:07:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (9, 'legacy-08', 'review', 'PRIVATE_DEAL', 0.4, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-08","decision":"review","category":"PRIVATE_DEAL","tag":"引导私下交易","other_categories":[],"confidence":0.4,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"PRIVATE_DEAL\", \"other_categories\": [], \"confidence\": 0.4, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":["low_confidence"],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:08:00Z"}}', '2025-03-01 00:08:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (10, 'legacy-09', 'restrict', 'MISINFO', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-09","decision":"restrict","category":"MISINFO","tag":"不实信息","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"MISINFO\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:09:00Z"}}', '2025-03-01 00:09:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (11, 'legacy-10', 'block', 'HATE', 0.92, 'ok', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-10","decision":"block","category":"HATE","tag":"辱骂、引战、宣扬仇恨","other_categories":[],"confidence":0.92,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"test","rationale":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.","reported_instructions":[],"raw_output":"### 1. Content extraction\nA person talks to the camera.\n### 5. Final summary\nDone.\n```json\n{\"category\": \"HATE\", \"other_categories\": [], \"confidence\": 0.92, \"evidence\": {\"frames\": [1], \"text\": []}, \"summary\": \"test\"}\n```","status":"ok","stage":"vlm","flags":[],"precedents":[],"error":null,"latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:10:00Z"}}', '2025-03-01 00:10:00+00', NULL, 'p0');
INSERT INTO public.verdicts VALUES (12, 'legacy-11', 'review', NULL, NULL, 'error', 'vlm', 'qwen', '1.0.0', 'd0', '{"sample_id":"legacy-11","decision":"review","category":null,"tag":null,"other_categories":[],"confidence":null,"token_confidence":null,"calibrated_confidence":null,"evidence":{"frames":[],"text":[],"cases":[],"matches":[]},"summary":"","rationale":"","reported_instructions":[],"raw_output":"","status":"error","stage":"vlm","flags":["error"],"precedents":[],"error":"decode failed","latency_s":null,"input_tokens":null,"output_tokens":null,"provenance":{"model":"qwen","adapter":null,"policy_version":"1.0.0","policy_digest":"d0","prompt_digest":"p0","generate_digest":null,"calibration_digest":null,"frame_timestamps":[],"package_version":"0.1.0","created_at":"2025-03-01T00:11:00Z"}}', '2025-03-01 00:11:00+00', NULL, 'p0');


--
-- Data for Name: watermarks; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.watermarks VALUES ('update_policy', 3, '2026-12-03 08:53:16.97116+00');


--
-- Name: feedback_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.feedback_id_seq', 5, true);


--
-- Name: gate_decisions_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.gate_decisions_id_seq', 1, false);


--
-- Name: models_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.models_id_seq', 1, true);


--
-- Name: precedents_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.precedents_id_seq', 1, true);


--
-- Name: review_audit_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.review_audit_id_seq', 1, true);


--
-- Name: verdicts_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.verdicts_id_seq', 12, true);


--
-- Name: feedback feedback_event_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.feedback
    ADD CONSTRAINT feedback_event_id_key UNIQUE (event_id);


--
-- Name: feedback feedback_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.feedback
    ADD CONSTRAINT feedback_pkey PRIMARY KEY (id);


--
-- Name: gate_decisions gate_decisions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.gate_decisions
    ADD CONSTRAINT gate_decisions_pkey PRIMARY KEY (id);


--
-- Name: models models_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.models
    ADD CONSTRAINT models_pkey PRIMARY KEY (id);


--
-- Name: precedents precedents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.precedents
    ADD CONSTRAINT precedents_pkey PRIMARY KEY (id);


--
-- Name: review_audit review_audit_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.review_audit
    ADD CONSTRAINT review_audit_pkey PRIMARY KEY (id);


--
-- Name: samples samples_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.samples
    ADD CONSTRAINT samples_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (name);


--
-- Name: verdicts verdicts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.verdicts
    ADD CONSTRAINT verdicts_pkey PRIMARY KEY (id);


--
-- Name: watermarks watermarks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.watermarks
    ADD CONSTRAINT watermarks_pkey PRIMARY KEY (name);


--
-- Name: ix_feedback_sample_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_feedback_sample_id ON public.feedback USING btree (sample_id);


--
-- Name: ix_precedents_sample_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_precedents_sample_id ON public.precedents USING btree (sample_id);


--
-- Name: ix_review_audit_sample_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_review_audit_sample_id ON public.review_audit USING btree (sample_id);


--
-- Name: ix_verdicts_sample_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_verdicts_sample_id ON public.verdicts USING btree (sample_id);


--
-- PostgreSQL database dump complete
--


