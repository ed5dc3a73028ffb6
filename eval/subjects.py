"""The C-Eval and CMMLU subject tables: one source of truth for the task YAMLs, the groups and the reports.

Subject ids and Chinese names are exactly those of lm-eval's own ``ceval-valid`` and ``cmmlu`` tasks
(their ``_generate_configs.py``), so the per-subject prompt descriptions are identical. Categories are the
official ones: C-Eval's ``subject_mapping.json`` (STEM, Social Science, Humanities, Other) and CMMLU's
``src/categories.py`` (STEM, Humanities, Social Science, Other, plus the overlapping "China specific").
A CMMLU subject has exactly one of the four main categories; 15 subjects are also China-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

STEM = "stem"
SOCIAL = "social_science"
HUMANITIES = "humanities"
OTHER = "other"
CHINA_SPECIFIC = "china_specific"

#: Display names of the category ids, in report order.
CATEGORY_TITLES = {
    STEM: "STEM",
    SOCIAL: "Social Science",
    HUMANITIES: "Humanities",
    OTHER: "Other",
    CHINA_SPECIFIC: "China specific",
}
MAIN_CATEGORIES = (STEM, SOCIAL, HUMANITIES, OTHER)


@dataclass(frozen=True)
class Subject:
    """One subject of a benchmark: id (file stem), Chinese name (used in the prompt), category."""

    name: str
    zh: str
    category: str
    china_specific: bool = False

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category the subject counts towards (CMMLU's China-specific subjects have two)."""
        return (self.category, CHINA_SPECIFIC) if self.china_specific else (self.category,)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's fixed facts: subjects, the split scored, the few-shot split, the categories."""

    name: str  # "ceval" / "cmmlu": also the sub-folder of the data dir
    title: str
    subjects: tuple[Subject, ...]
    eval_split: str  # split scored: C-Eval "val" (test answers are not public), CMMLU "test"
    fewshot_split: str  # "dev": 5 examples per subject
    categories: tuple[str, ...]

    def subject(self, name: str) -> Subject:
        """The subject called ``name``; a wrong name lists the valid ones."""
        for s in self.subjects:
            if s.name == name:
                return s
        raise KeyError(
            f"{self.title} has no subject {name!r}; subjects: {', '.join(s.name for s in self.subjects)}"
        )


_CEVAL = {
    "computer_network": ("计算机网络", STEM),
    "operating_system": ("操作系统", STEM),
    "computer_architecture": ("计算机组成", STEM),
    "college_programming": ("大学编程", STEM),
    "college_physics": ("大学物理", STEM),
    "college_chemistry": ("大学化学", STEM),
    "advanced_mathematics": ("高等数学", STEM),
    "probability_and_statistics": ("概率统计", STEM),
    "discrete_mathematics": ("离散数学", STEM),
    "electrical_engineer": ("注册电气工程师", STEM),
    "metrology_engineer": ("注册计量师", STEM),
    "high_school_mathematics": ("高中数学", STEM),
    "high_school_physics": ("高中物理", STEM),
    "high_school_chemistry": ("高中化学", STEM),
    "high_school_biology": ("高中生物", STEM),
    "middle_school_mathematics": ("初中数学", STEM),
    "middle_school_biology": ("初中生物", STEM),
    "middle_school_physics": ("初中物理", STEM),
    "middle_school_chemistry": ("初中化学", STEM),
    "veterinary_medicine": ("兽医学", STEM),
    "college_economics": ("大学经济学", SOCIAL),
    "business_administration": ("工商管理", SOCIAL),
    "marxism": ("马克思主义基本原理", SOCIAL),
    "mao_zedong_thought": ("毛泽东思想和中国特色社会主义理论体系概论", SOCIAL),
    "education_science": ("教育学", SOCIAL),
    "teacher_qualification": ("教师资格", SOCIAL),
    "high_school_politics": ("高中政治", SOCIAL),
    "high_school_geography": ("高中地理", SOCIAL),
    "middle_school_politics": ("初中政治", SOCIAL),
    "middle_school_geography": ("初中地理", SOCIAL),
    "modern_chinese_history": ("近代史纲要", HUMANITIES),
    "ideological_and_moral_cultivation": ("思想道德修养与法律基础", HUMANITIES),
    "logic": ("逻辑学", HUMANITIES),
    "law": ("法学", HUMANITIES),
    "chinese_language_and_literature": ("中国语言文学", HUMANITIES),
    "art_studies": ("艺术学", HUMANITIES),
    "professional_tour_guide": ("导游资格", HUMANITIES),
    "legal_professional": ("法律职业资格", HUMANITIES),
    "high_school_chinese": ("高中语文", HUMANITIES),
    "high_school_history": ("高中历史", HUMANITIES),
    "middle_school_history": ("初中历史", HUMANITIES),
    "civil_servant": ("公务员", OTHER),
    "sports_science": ("体育学", OTHER),
    "plant_protection": ("植物保护", OTHER),
    "basic_medicine": ("基础医学", OTHER),
    "clinical_medicine": ("临床医学", OTHER),
    "urban_and_rural_planner": ("注册城乡规划师", OTHER),
    "accountant": ("注册会计师", OTHER),
    "fire_engineer": ("注册消防工程师", OTHER),
    "environmental_impact_assessment_engineer": ("环境影响评价工程师", OTHER),
    "tax_accountant": ("税务师", OTHER),
    "physician": ("医师资格", OTHER),
}

_CMMLU = {
    "agronomy": ("农学", OTHER, False),
    "anatomy": ("解剖学", STEM, False),
    "ancient_chinese": ("古汉语", SOCIAL, True),
    "arts": ("艺术学", HUMANITIES, False),
    "astronomy": ("天文学", STEM, False),
    "business_ethics": ("商业伦理", SOCIAL, False),
    "chinese_civil_service_exam": ("中国公务员考试", SOCIAL, True),
    "chinese_driving_rule": ("中国驾驶规则", OTHER, True),
    "chinese_food_culture": ("中国饮食文化", SOCIAL, True),
    "chinese_foreign_policy": ("中国外交政策", SOCIAL, True),
    "chinese_history": ("中国历史", HUMANITIES, True),
    "chinese_literature": ("中国文学", HUMANITIES, True),
    "chinese_teacher_qualification": ("中国教师资格", SOCIAL, True),
    "clinical_knowledge": ("临床知识", OTHER, False),
    "college_actuarial_science": ("大学精算学", STEM, False),
    "college_education": ("大学教育学", SOCIAL, False),
    "college_engineering_hydrology": ("大学工程水文学", STEM, False),
    "college_law": ("大学法律", HUMANITIES, False),
    "college_mathematics": ("大学数学", STEM, False),
    "college_medical_statistics": ("大学医学统计", STEM, False),
    "college_medicine": ("大学医学", OTHER, False),
    "computer_science": ("计算机科学", STEM, False),
    "computer_security": ("计算机安全", OTHER, False),
    "conceptual_physics": ("概念物理学", STEM, False),
    "construction_project_management": ("建设工程管理", OTHER, True),
    "economics": ("经济学", SOCIAL, False),
    "education": ("教育学", SOCIAL, False),
    "electrical_engineering": ("电气工程", STEM, False),
    "elementary_chinese": ("小学语文", SOCIAL, True),
    "elementary_commonsense": ("小学常识", OTHER, True),
    "elementary_information_and_technology": ("小学信息技术", OTHER, False),
    "elementary_mathematics": ("初等数学", STEM, False),
    "ethnology": ("民族学", SOCIAL, True),
    "food_science": ("食品科学", OTHER, False),
    "genetics": ("遗传学", STEM, False),
    "global_facts": ("全球事实", HUMANITIES, False),
    "high_school_biology": ("高中生物", STEM, False),
    "high_school_chemistry": ("高中化学", STEM, False),
    "high_school_geography": ("高中地理", SOCIAL, False),
    "high_school_mathematics": ("高中数学", STEM, False),
    "high_school_physics": ("高中物理学", STEM, False),
    "high_school_politics": ("高中政治", SOCIAL, True),
    "human_sexuality": ("人类性行为", OTHER, False),
    "international_law": ("国际法学", HUMANITIES, False),
    "journalism": ("新闻学", SOCIAL, False),
    "jurisprudence": ("法理学", HUMANITIES, False),
    "legal_and_moral_basis": ("法律与道德基础", OTHER, False),
    "logical": ("逻辑学", HUMANITIES, False),
    "machine_learning": ("机器学习", STEM, False),
    "management": ("管理学", SOCIAL, False),
    "marketing": ("市场营销", SOCIAL, False),
    "marxist_theory": ("马克思主义理论", HUMANITIES, False),
    "modern_chinese": ("现代汉语", SOCIAL, True),
    "nutrition": ("营养学", OTHER, False),
    "philosophy": ("哲学", HUMANITIES, False),
    "professional_accounting": ("专业会计", SOCIAL, False),
    "professional_law": ("专业法学", HUMANITIES, False),
    "professional_medicine": ("专业医学", OTHER, False),
    "professional_psychology": ("专业心理学", SOCIAL, False),
    "public_relations": ("公共关系", SOCIAL, False),
    "security_study": ("安全研究", SOCIAL, False),
    "sociology": ("社会学", SOCIAL, False),
    "sports_science": ("体育学", OTHER, False),
    "traditional_chinese_medicine": ("中医中药", OTHER, True),
    "virology": ("病毒学", STEM, False),
    "world_history": ("世界历史", HUMANITIES, False),
    "world_religions": ("世界宗教", HUMANITIES, False),
}

CEVAL = Benchmark(
    name="ceval",
    title="C-Eval",
    subjects=tuple(Subject(k, zh, cat) for k, (zh, cat) in _CEVAL.items()),
    eval_split="val",
    fewshot_split="dev",
    categories=MAIN_CATEGORIES,
)

CMMLU = Benchmark(
    name="cmmlu",
    title="CMMLU",
    subjects=tuple(Subject(k, zh, cat, cs) for k, (zh, cat, cs) in _CMMLU.items()),
    eval_split="test",
    fewshot_split="dev",
    categories=(*MAIN_CATEGORIES, CHINA_SPECIFIC),
)

BENCHMARKS = {b.name: b for b in (CEVAL, CMMLU)}
