set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row1.png.tmp.12178'
$m << EOD
0.147986 0.151819 0.14231 0.137915 0.0787476 0.0794189 0.109644 0.152161
0.132837 0.14519 0.172656 0.123132 0.0935059 0.106763 0.0836914 0.142224
EOD
set title "Similarity-Aware SMoE: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
