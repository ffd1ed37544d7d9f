set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row7.png.tmp.22593'
$m << EOD
0.15686 0.0900879 0.156982 0.135742 0.111206 0.0986328 0.171875 0.0786133
0.0948486 0.133423 0.0921631 0.182373 0.167969 0.105957 0.103149 0.120117
EOD
set title "USMoE per sequence (authors' training-free code), k=1: load\n(last epoch, first seed)"
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
